"""Comparing influence across models and checkpoints (the study's scale finding, Grosse et al. 2023 sec. 5.3).

:func:`wherefrom.scaling.compare.compare` reads score folders of several models (or checkpoints of one training
run) over the same corpus and queries and measures, per query and with intervals over queries, how rankings
agree, how much the influential data shares the query's words, where in the network influence sits, how heavy
its tail is, and (with a truth file or query pairs) whether it comes from the fact's carriers or another language.
"""

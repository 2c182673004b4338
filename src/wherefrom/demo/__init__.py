"""The built-in demo: wherefrom run end to end on the synthetic model with known answers (``wherefrom.synthetic``),
or on SmolLM2 over Python's documentation.

Modules: ``pipeline`` runs fit, score, the index and the report; ``recall`` checks the top documents against the
planted ground truth, ``neurons`` where the influence concentrates, ``summary`` prints the closing table and
``smollm2`` prepares the pretrained model's corpus and prompts. This package imports nothing heavy until one of
those modules is used.
"""

"""The built-in demo: a synthetic corpus with planted facts, its queries, and a small LM trained on it on CPU.

Entry point: :func:`wherefrom.demo.cache.load_or_train` returns a cached Hugging Face model folder that also holds
``corpus.jsonl``, ``queries.jsonl`` and ``ground_truth.json``. Modules: ``config`` (sizes), ``corpus``
(documents and ground truth), ``queries``, ``tokenizer``, ``model``, ``training``, ``evaluation``, ``cache``;
``pipeline`` runs fit, score and the report on it, and ``summary`` prints its closing table.
This package imports nothing heavy until one of those modules is used.
"""

"""The demo's model and data: a synthetic corpus with planted facts, its queries, and a small LM trained on it on
CPU. Both `wherefrom demo` (``wherefrom.demo``) and `wherefrom validate lds` (``wherefrom.faithfulness``) use it.

Entry point: :func:`wherefrom.synthetic.cache.load_or_train` returns a cached Hugging Face model folder that also
holds ``corpus.jsonl``, ``queries.jsonl`` and ``ground_truth.json``. Modules: ``config`` (sizes), ``templates``,
``corpus`` (documents and ground truth), ``queries``, ``tokenizer``, ``model``, ``training``, ``evaluation``,
``cache``. This package imports nothing heavy until one of those modules is used.
"""

"""genloom-text: the text modality of genloom.

A byte-level tokenizer and decoder (:mod:`genloom_text.tokenizer`), a decoder-only
Transformer with KV-cache sampling (:mod:`genloom_text.model`), and text corpora: the
CPython documentation that ships with Python, or any text files (:mod:`genloom_text.corpus`).
genloom finds all of it through the entry point named in ``pyproject.toml``, which points
at :mod:`genloom_text.plugin`. Nothing is imported here, so listing plugins stays fast.
"""

"""Hugging Face transformers integration internals; the public surface is ``tops_adapters.transformers``."""

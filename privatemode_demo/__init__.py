"""`privatemode-demo`: confidential RAG retrieval with both frameworks, offline.

An application of the library, not part of it: it uses `privatemode_integrations` as any app
would, and ships its own small corpus (`data/demo_corpus.json`).
"""

from privatemode_demo._app import load_corpus, main

__all__ = ["load_corpus", "main"]

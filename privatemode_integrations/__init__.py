"""Confidential embeddings for LangChain and LlamaIndex, through the Privatemode proxy."""

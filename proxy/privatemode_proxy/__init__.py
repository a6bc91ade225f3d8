"""privatemode-proxy: an attested, encrypting OpenAI-compatible proxy for Privatemode."""

__version__ = "0.1.0"

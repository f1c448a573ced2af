"""p2pinfer: a peer-to-peer network for LLM inference."""

__version__ = "0.1.0"

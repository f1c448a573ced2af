"""node part of p2pinfer (see docs/architecture.md)."""

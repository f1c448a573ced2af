"""Settlement on an EVM chain: contracts, chain client, channels, stakes (docs/settlement.md)."""

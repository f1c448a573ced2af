"""Settlement on an EVM chain (docs/settlement.md): the Vyper contracts, their
compiled artifacts, deployment, and the voucher and slash digests nodes sign."""

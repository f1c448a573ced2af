"""Signatures the contracts check (docs/settlement.md): the slash digest, EIP-191
personal hashing, signing a digest and recovering its signer.

Interim copy in the documented shape for the node-side work on branch `stakes`; the
contracts branch owns this module and its version is kept at merge.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

_PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"


def voucher_digest(channels: str, chain_id: int, consumer: str, provider: str,
                   cumulative: int) -> bytes:
    """keccak256(abi_encode(channels, chain_id, consumer, provider, cumulative)): what a
    consumer signs to owe `provider` `cumulative` in all on the Channels contract."""
    return keccak(abi_encode(["address", "uint256", "address", "address", "uint256"],
                             [to_checksum_address(channels), chain_id,
                              to_checksum_address(consumer), to_checksum_address(provider),
                              cumulative]))


def slash_digest(stake: str, chain_id: int, provider: str, amount: int,
                 evidence: bytes) -> bytes:
    """keccak256(abi_encode(stake, chain_id, provider, amount, evidence)): what validators
    sign to slash `amount` of `provider`'s stake for `evidence` (32 bytes)."""
    return keccak(abi_encode(["address", "uint256", "address", "uint256", "bytes32"],
                             [to_checksum_address(stake), chain_id,
                              to_checksum_address(provider), amount, evidence]))


def personal_hash(digest: bytes) -> bytes:
    """The EIP-191 personal-message hash of a 32-byte digest (what ecrecover sees)."""
    return keccak(_PERSONAL_PREFIX + digest)


def sign_digest(priv: bytes, digest: bytes) -> bytes:
    """65-byte r || s || v EIP-191 personal signature of `digest` by private key `priv`."""
    signed = Account.sign_message(encode_defunct(primitive=digest), private_key=priv)
    return bytes(signed.signature)


def recover_signer(digest: bytes, sig: bytes) -> str | None:
    """The checksummed address whose personal signature of `digest` `sig` is; None if
    `sig` is malformed."""
    try:
        if len(sig) != 65 or len(digest) != 32:
            return None
        return str(Account.recover_message(encode_defunct(primitive=digest),
                                           signature=bytes(sig)))
    except Exception:  # attacker bytes: any failure to recover is "no signer"
        return None

"""The digests nodes sign for the settlement contracts, and EIP-191 signing and recovery.

Pure: no web3 and no chain. These functions are the single source of truth for
what `Channels.redeem` and `Stake.slash` check (tests sign here and redeem
on-chain). A signature is 65 bytes r || s || v with v in {27, 28}, over the
EIP-191 personal message of a 32-byte digest, as the contracts' `ecrecover` expects.
"""

from __future__ import annotations

from eth_abi.abi import encode
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

#: EIP-191 "personal message" prefix for a 32-byte message.
PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
SIGNATURE_LENGTH = 65
#: The order of secp256k1: ecrecover refuses r or s outside 1..N-1.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def voucher_digest(
    channels: str, chain_id: int, consumer: str, provider: str, cumulative: int
) -> bytes:
    """keccak256(abi_encode(channels, chain_id, consumer, provider, cumulative)): what a
    consumer signs to owe `provider` `cumulative` token units in all on that contract."""
    return keccak(
        encode(
            ["address", "uint256", "address", "address", "uint256"],
            [channels, chain_id, consumer, provider, cumulative],
        )
    )


def slash_digest(stake: str, chain_id: int, provider: str, amount: int, evidence: bytes) -> bytes:
    """keccak256(abi_encode(stake, chain_id, provider, amount, evidence)): what validators
    sign to slash `provider` by `amount` for `evidence` (32 bytes, e.g. a CheckReport hash)."""
    if len(evidence) != 32:
        raise ValueError(f"evidence is a 32-byte hash, got {len(evidence)} bytes")
    return keccak(
        encode(
            ["address", "uint256", "address", "uint256", "bytes32"],
            [stake, chain_id, provider, amount, evidence],
        )
    )


def personal_hash(digest: bytes) -> bytes:
    """The EIP-191 hash a signature covers: keccak256(PERSONAL_PREFIX ++ digest)."""
    if len(digest) != 32:
        raise ValueError(f"a digest is 32 bytes, got {len(digest)}")
    return keccak(PERSONAL_PREFIX + digest)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """The 65-byte EIP-191 signature (r || s || v, v in {27, 28}) of `digest` by `private_key`."""
    signature = PrivateKey(private_key).sign_msg_hash(personal_hash(digest))
    r, s, v = int(signature.r), int(signature.s), int(signature.v)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])


def recover_signer(digest: bytes, signature: bytes) -> str | None:
    """The checksummed address whose EIP-191 signature of `digest` this is, or None when
    `signature` is malformed or recovers nothing (never raises on untrusted bytes)."""
    if len(digest) != 32 or len(signature) != SIGNATURE_LENGTH:
        return None
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    # The same rules as the ecrecover precompile, so a voucher this accepts redeems.
    if v not in (27, 28) or not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        return None
    try:
        public_key = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(
            personal_hash(digest)
        )
    except (BadSignature, ValidationError, ValueError):
        return None
    return str(to_checksum_address(public_key.to_canonical_address()))


def address_of(private_key: bytes) -> str:
    """The checksummed account address of a secp256k1 private key."""
    return str(to_checksum_address(PrivateKey(private_key).public_key.to_canonical_address()))

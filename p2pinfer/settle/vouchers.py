"""Channel vouchers: the digest a consumer signs, and EIP-191 signing and recovery
(docs/settlement.md, `Channels.vy`).

Stand-in in the documented shape until the contracts' version lands on main (theirs
is kept at the merge): coincurve for secp256k1, pycryptodome for keccak.
"""

from __future__ import annotations

import coincurve

from p2pinfer.settle.addresses import address_bytes, checksum_address, keccak256

_PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + address_bytes(address)


def voucher_digest(channels: str, chain_id: int, consumer: str, provider: str,
                   cumulative: int) -> bytes:
    """keccak256(abi_encode(channels, chain_id, consumer, provider, cumulative))."""
    return keccak256(_address_word(channels) + _word(chain_id) + _address_word(consumer)
                     + _address_word(provider) + _word(cumulative))


def personal_hash(digest: bytes) -> bytes:
    """The EIP-191 personal-message hash of a 32-byte digest (what ecrecover checks)."""
    return keccak256(_PERSONAL_PREFIX + digest)


def sign_digest(priv: bytes, digest: bytes) -> bytes:
    """The 65-byte (r || s || v, v in {27, 28}) EIP-191 signature of `digest` by `priv`."""
    sig = coincurve.PrivateKey(priv).sign_recoverable(personal_hash(digest), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def address_of_public_key(public_key: coincurve.PublicKey) -> str:
    """The checksummed address of a secp256k1 public key."""
    return checksum_address(keccak256(public_key.format(compressed=False)[1:])[-20:])


def recover_signer(digest: bytes, sig: bytes) -> str | None:
    """The address whose EIP-191 signature of `digest` `sig` is; None for a malformed or
    high-s signature (never an exception: the bytes come from peers)."""
    if len(sig) != 65 or sig[64] not in (27, 28):
        return None
    if int.from_bytes(sig[32:64], "big") > _SECP256K1_N // 2:
        return None  # malleable form: the contract's ecrecover wrapper refuses it too
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes([sig[64] - 27]), personal_hash(digest), hasher=None)
    except Exception:
        return None
    return address_of_public_key(public_key)

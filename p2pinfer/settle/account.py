"""A node's chain account, derived from its Ed25519 key, and the binding that ties the
two together (docs/settlement.md, "Accounts").

One key file is all a node holds: the secp256k1 key is a hash of the Ed25519 seed
under a domain tag. Nobody can derive the address from the public key, so the node
proves the link with an EIP-191 signature over its PeerID, which anyone checks with
`ecrecover` and no chain call.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.datatypes import PrivateKey

from p2pinfer.identity import NodeIdentity, peer_id_to_bytes

ACCOUNT_DOMAIN = b"p2pinfer/chain-account/v1"
BIND_DOMAIN = b"p2pinfer/bind/v1"
# The order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class ChainAccount:
    """An EVM account: its checksummed address and its 32-byte private key."""

    address: str
    private_key: bytes = field(repr=False)

    @classmethod
    def from_private_key(cls, private_key: bytes) -> ChainAccount:
        """The account of a 32-byte secp256k1 private key."""
        return cls(address=PrivateKey(private_key).public_key.to_checksum_address(),
                   private_key=private_key)


def derive_private_key(ed25519_seed: bytes) -> bytes:
    """The secp256k1 key of a node: sha256(domain ++ seed [++ counter]) mod n.

    The first try has no counter byte; only if it yields 0 (probability ~2^-256) do
    tries 1, 2, ... append the counter as one byte.
    """
    if len(ed25519_seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    for counter in range(256):
        suffix = b"" if counter == 0 else bytes([counter])
        digest = hashlib.sha256(ACCOUNT_DOMAIN + ed25519_seed + suffix).digest()
        scalar = int.from_bytes(digest, "big") % SECP256K1_N
        if scalar != 0:
            return scalar.to_bytes(32, "big")
    raise AssertionError("unreachable: 256 hashes that are all 0 mod n")


def account_of(node: NodeIdentity) -> ChainAccount:
    """The chain account derived from a node's Ed25519 key."""
    return ChainAccount.from_private_key(derive_private_key(node.seed))


def _bind_message(peer_id: str | bytes) -> bytes:
    raw = peer_id_to_bytes(peer_id) if isinstance(peer_id, str) else peer_id
    return BIND_DOMAIN + raw


#: Bindings signed and checked, remembered: every paid job's request carries the payer's
#: binding and the accept the payee's, and a secp256k1 sign or recover is ~0.1-0.2 ms of
#: the 1.15 ms settlement added to TTFT (bench/settlement.py). Both are pure functions
#: of their arguments; the caches are bounded.
BINDING_CACHE = 4096


def bind_signature(account: ChainAccount, peer_id: str | bytes) -> bytes:
    """The account's 65-byte EIP-191 signature over `b"p2pinfer/bind/v1" ++ peer id bytes`.

    `peer_id` is the base58 PeerID or its binary multihash (`ID.to_bytes()`).
    """
    return _bind_signature(account.private_key, peer_id)


@functools.lru_cache(maxsize=BINDING_CACHE)
def _bind_signature(private_key: bytes, peer_id: str | bytes) -> bytes:
    signed = Account.sign_message(encode_defunct(primitive=_bind_message(peer_id)),
                                  private_key=private_key)
    return bytes(signed.signature)


def check_binding(address: str, peer_id: str | bytes, sig: bytes) -> bool:
    """Whether `sig` is `address`'s binding of `peer_id`; False (never an exception) for
    any malformed address, peer id or signature."""
    if not isinstance(sig, bytes | bytearray) or len(sig) != 65 or not isinstance(
            address, str) or not isinstance(peer_id, str | bytes):
        return False
    return _check_binding(address.lower(), peer_id, bytes(sig))


@functools.lru_cache(maxsize=BINDING_CACHE)
def _check_binding(address: str, peer_id: str | bytes, sig: bytes) -> bool:
    try:
        message = encode_defunct(primitive=_bind_message(peer_id))
        signer = Account.recover_message(message, signature=sig)
        return str(signer).lower() == address
    except Exception:  # attacker bytes: any failure to recover is a refusal
        return False

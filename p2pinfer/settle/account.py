"""A node's chain account, derived from its Ed25519 key, and the binding that ties the
two together (docs/settlement.md, "Accounts").

Stand-in in the documented shape (`ChainAccount`, `account_of`, `bind_signature`,
`check_binding`) until the chain client's version lands on main; theirs is kept at
the merge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import coincurve

from p2pinfer.identity import NodeIdentity, _b58decode
from p2pinfer.settle.addresses import keccak256
from p2pinfer.settle.vouchers import address_of_public_key

ACCOUNT_DOMAIN = b"p2pinfer/chain-account/v1"
BIND_DOMAIN = b"p2pinfer/bind/v1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class ChainAccount:
    """An EVM account: its checksummed address and its 32-byte private key."""

    address: str
    private_key: bytes = field(repr=False)

    @classmethod
    def from_private_key(cls, private_key: bytes) -> ChainAccount:
        """The account of a 32-byte secp256k1 private key."""
        public = coincurve.PrivateKey(private_key).public_key
        return cls(address=address_of_public_key(public), private_key=private_key)


def derive_private_key(ed25519_seed: bytes) -> bytes:
    """The secp256k1 key of a node: sha256(domain ++ seed [++ counter]) mod n."""
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


def _bind_hash(peer_id: str | bytes) -> bytes:
    raw = _b58decode(peer_id) if isinstance(peer_id, str) else peer_id
    message = BIND_DOMAIN + raw
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def bind_signature(account: ChainAccount, peer_id: str | bytes) -> bytes:
    """The account's 65-byte EIP-191 signature over `b"p2pinfer/bind/v1" ++ peer id bytes`."""
    sig = coincurve.PrivateKey(account.private_key).sign_recoverable(
        _bind_hash(peer_id), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def check_binding(address: str, peer_id: str | bytes, sig: bytes) -> bool:
    """Whether `sig` is `address`'s binding of `peer_id`; False (never an exception) for
    any malformed address, peer id or signature."""
    try:
        if len(sig) != 65 or sig[64] not in (27, 28):
            return False
        public = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes([sig[64] - 27]), _bind_hash(peer_id), hasher=None)
        return address_of_public_key(public).lower() == address.lower()
    except Exception:  # attacker bytes: any failure to recover is a refusal
        return False

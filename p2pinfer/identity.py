"""Node identity: one Ed25519 key on disk, and the libp2p PeerID derived from it.

The key file holds the 32-byte Ed25519 seed as hex under a one-line header.
It is created with mode 0600 and refused when group or others can read it, as
ssh does for private keys. The PeerID is computed here without libp2p (so the
pure parts can name peers); a test proves it equals py-libp2p's own.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from p2pinfer.errors import KeyFileError, SignatureError

KEY_FILE_NAME = "node.key"
_HEADER = "p2pinfer-ed25519-seed-v1"
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, rem = divmod(n, 58)
        out = _B58_ALPHABET[rem] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        idx = _B58_ALPHABET.find(ch)
        if idx < 0:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + idx
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p PeerID (base58, `12D3KooW...`) of a 32-byte Ed25519 public key.

    libp2p encodes the key as a protobuf `PublicKey{Type: Ed25519(1), Data}` (36
    bytes); keys of at most 42 bytes use the identity multihash (code 0x00).
    """
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    proto = b"\x08\x01\x12\x20" + public_key
    return _b58encode(b"\x00" + bytes([len(proto)]) + proto)


def peer_id_to_bytes(peer_id: str) -> bytes:
    """The binary multihash behind a base58 PeerID (what libp2p's `ID.to_bytes()` gives);
    ValueError when `peer_id` is not base58."""
    return _b58decode(peer_id)


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside an identity-multihash PeerID; ValueError otherwise."""
    raw = _b58decode(peer_id)
    if len(raw) != 38 or raw[:6] != b"\x00\x24\x08\x01\x12\x20":
        raise ValueError(f"not an Ed25519 PeerID: {peer_id!r}")
    return raw[6:]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless `signature` is `public_key`'s Ed25519 signature of `message`."""
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise SignatureError("signature does not verify") from exc


@dataclass(frozen=True)
class NodeIdentity:
    """A node's Ed25519 key pair and the names derived from it."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh random identity (not stored anywhere)."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """The identity whose 32-byte Ed25519 seed is `seed`."""
        if len(seed) != 32:
            raise KeyFileError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message`."""
        return bytes(self.signing_key.sign(message).signature)

    def libp2p_key_pair(self) -> Any:
        """The same key as a py-libp2p `KeyPair` (imports libp2p lazily)."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self.seed)


def key_path(home: Path) -> Path:
    return home / KEY_FILE_NAME


def create(home: Path) -> NodeIdentity:
    """Create a new key in `home` (mode 0600); KeyFileError if one already exists."""
    home.mkdir(parents=True, exist_ok=True)
    path = key_path(home)
    ident = NodeIdentity.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a node key") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{_HEADER}\n{ident.seed.hex()}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return ident


def load(home: Path) -> NodeIdentity:
    """Load the key in `home`; KeyFileError (one clear line) on any problem."""
    path = key_path(home)
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(
            f"no node key at {path}; run `p2pinfer init --home {home}` first"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path} is readable by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: not a p2pinfer key file") from exc
    if len(lines) != 2 or lines[0] != _HEADER:
        raise KeyFileError(f"{path} is not a p2pinfer key file")
    try:
        seed = bytes.fromhex(lines[1])
    except ValueError as exc:
        raise KeyFileError(f"{path} holds a malformed key") from exc
    if len(seed) != 32:
        raise KeyFileError(f"{path} holds a malformed key")
    return NodeIdentity.from_seed(seed)


def load_or_create(home: Path) -> NodeIdentity:
    """Load the key in `home`, creating it first if there is none."""
    if key_path(home).exists():
        return load(home)
    return create(home)

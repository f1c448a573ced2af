"""The node key file and the PeerID derived from it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.id import ID

from p2pinfer import identity
from p2pinfer.errors import KeyFileError, SignatureError
from p2pinfer.identity import (
    NodeIdentity,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave a carelessly created file world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_key_file_is_private(tmp_path: Path, open_umask: None) -> None:
    ident = identity.create(tmp_path / "home")
    path = identity.key_path(tmp_path / "home")
    assert mode(path) == 0o600
    assert identity.load(tmp_path / "home").public_key == ident.public_key


def test_create_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    first = identity.create(tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        identity.create(tmp_path)
    assert identity.load(tmp_path).peer_id == first.peer_id


def test_load_or_create_keeps_the_same_identity(tmp_path: Path) -> None:
    assert identity.load_or_create(tmp_path).peer_id == identity.load_or_create(tmp_path).peer_id


def test_a_group_readable_key_is_refused_with_the_fix_in_the_message(tmp_path: Path) -> None:
    identity.create(tmp_path)
    path = identity.key_path(tmp_path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        identity.load(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "0644" in message and f"chmod 600 {path}" in message


def test_a_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="p2pinfer init"):
        identity.load(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "hello\n",
        "p2pinfer-ed25519-seed-v1\n",
        "p2pinfer-ed25519-seed-v1\nzz" + "00" * 31 + "\n",
        "p2pinfer-ed25519-seed-v1\n" + "00" * 31 + "\n",
        "p2pinfer-ed25519-seed-v1\n" + "00" * 32 + "\nextra\n",
        "ssh-ed25519 AAAA" + "A" * 60 + "\n",
    ],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = identity.key_path(tmp_path)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="key"):
        identity.load(tmp_path)


def test_a_binary_key_file_is_refused(tmp_path: Path) -> None:
    path = identity.key_path(tmp_path)
    path.write_bytes(b"\xff\xfe" * 40)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a p2pinfer key file"):
        identity.load(tmp_path)


def test_a_directory_in_place_of_the_key_is_refused(tmp_path: Path) -> None:
    identity.key_path(tmp_path).mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        identity.load(tmp_path)


@settings(deadline=None)  # the first example loads libp2p's crypto
@given(st.binary(min_size=32, max_size=32))
def test_the_peer_id_equals_py_libp2ps(seed: bytes) -> None:
    ident = NodeIdentity.from_seed(seed)
    theirs = ID.from_pubkey(ident.libp2p_key_pair().public_key).to_string()
    assert ident.peer_id == theirs
    assert theirs.startswith("12D3KooW")
    assert public_key_from_peer_id(theirs) == ident.public_key


def test_a_peer_id_that_is_not_ed25519_is_refused() -> None:
    with pytest.raises(ValueError):
        public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")  # RSA-style
    with pytest.raises(ValueError):
        public_key_from_peer_id("12D3KooW0OIl")  # not base58
    with pytest.raises(ValueError):
        peer_id_from_public_key(b"short")


def test_signatures_verify_only_for_their_key_and_message() -> None:
    a, b = NodeIdentity.generate(), NodeIdentity.generate()
    sig = a.sign(b"pay 3")
    verify_signature(a.public_key, b"pay 3", sig)
    with pytest.raises(SignatureError):
        verify_signature(a.public_key, b"pay 4", sig)
    with pytest.raises(SignatureError):
        verify_signature(b.public_key, b"pay 3", sig)
    with pytest.raises(SignatureError):
        verify_signature(b"short", b"pay 3", sig)


def test_a_seed_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(KeyFileError):
        NodeIdentity.from_seed(b"\x00" * 31)

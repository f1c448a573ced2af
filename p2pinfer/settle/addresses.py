"""EVM addresses between the wire (20 raw bytes) and the chain API (checksummed text).

Messages carry an account as its 20 bytes (`protocol.messages.ChainAddress`): one
encoding, no case to normalise. Everything off the wire (ChainPort, logs, the CLI)
uses the EIP-55 checksummed "0x..." text.
"""

from __future__ import annotations

from eth_utils.address import to_checksum_address

from p2pinfer.errors import ValidationError


def checksum_address(raw: bytes) -> str:
    """The EIP-55 text of a 20-byte address."""
    if len(raw) != 20:
        raise ValidationError(f"an address is 20 bytes, not {len(raw)}")
    return str(to_checksum_address(raw))


def address_bytes(address: str) -> bytes:
    """The 20 bytes of a "0x..." address (any case); ValidationError if it is not one, or
    if it is mixed-case and its checksum is wrong."""
    text = address[2:] if address[:2] in ("0x", "0X") else address
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise ValidationError(f"not an address: {address[:64]!r}") from exc
    if len(raw) != 20:
        raise ValidationError(f"not an address (20 bytes): {address[:64]!r}")
    if text != text.lower() and text != text.upper() and checksum_address(raw) != "0x" + text:
        raise ValidationError(f"address checksum does not match: {address!r}")
    return raw


def same_address(a: str, b: str) -> bool:
    """Whether two address texts name the same account (case-insensitive)."""
    return a.lower() == b.lower()

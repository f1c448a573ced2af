"""The one place that fuzzes what p2pinfer decodes: the canonical codec, protocol messages
and every signed record (stake declarations, proposals, votes, ledger entry bodies).

An attacker sends any bytes it likes. For each decoder: random bytes, byte-level
mutations of a valid encoding (flip, insert, delete, truncate, extend),
structure-level ones (a valid map with a field replaced, removed or added, encoded
canonically so it passes the first check) and an optional key sent as nil may
only raise DecodeError, ValidationError, SignatureError (or FrameTooLarge); and
whatever does decode re-encodes to exactly the bytes it came from (one value, one
encoding). Valid records generated at random round-trip: decode(encode(x)) == x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError, FrameTooLarge, SignatureError, ValidationError
from p2pinfer.gov.messages import (
    GOVERNABLE_PRESETS,
    GovMessage,
    decode_message,
    sign_proposal,
    sign_vote,
    verify_message,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.market import entries as E
from p2pinfer.market.channel_entries import RedeemedClaim, RedemptionBody, VoucherBody
from p2pinfer.market.split import PRESETS, split
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, StakeDeclaration, sign_stake, verify_stake
from p2pinfer.protocol import canonical
from p2pinfer.protocol.codec import decode as decode_wire
from p2pinfer.protocol.codec import sign
from tests.unit.protocol_strategies import CONSUMER, STRATEGIES

ALLOWED = (DecodeError, ValidationError, SignatureError, FrameTooLarge)
U63 = 2**63 - 1
EXAMPLES = 150
ATTACKS = 400
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Keys some records leave out when unset: present (as nil or anything) they must not
#: make a second encoding of the same record.
OPTIONAL_KEYS = ["snapshot", "account", "binding", "grant"]
KEYS = [NodeIdentity.from_seed(bytes([i]) * 32) for i in range(1, 4)]

# --- valid records ---------------------------------------------------------------

keys = st.sampled_from(KEYS)
u63 = st.integers(0, U63)
amounts = st.integers(0, 10**15)
addr = st.binary(min_size=20, max_size=20)
blob = st.binary(max_size=64)
text = st.text(max_size=32)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), U63) | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=4),
    max_leaves=12,
)


@st.composite
def stakes(draw: st.DrawFn, key: NodeIdentity | None = None, upto: int = U63) -> StakeDeclaration:
    return sign_stake(key or draw(keys), draw(u63), draw(st.integers(0, upto)))


@st.composite
def parameter_values(draw: st.DrawFn) -> tuple[str, int | str]:
    return draw(st.sampled_from([
        ("base_rate", st.integers(100, 10_000)), ("check_rate_pm", st.integers(0, 200)),
        ("min_stake", st.integers(0, DEFAULT_MINIMUM_STAKE)),
        ("split_preset", st.sampled_from(GOVERNABLE_PRESETS)),
    ]).flatmap(lambda pv: pv[1].map(lambda v: (pv[0], v))))


@st.composite
def proposals(draw: st.DrawFn) -> GovMessage:
    issued = draw(st.integers(0, U63 - 2))
    deadline = draw(st.integers(issued + 1, U63 - 1))
    parameter, value = draw(parameter_values())
    return sign_proposal(draw(keys), parameter, value, voting_deadline=deadline,
                         effective_at=draw(st.integers(deadline, U63)), issued_at=issued,
                         snapshot_block=draw(st.none() | u63))


@st.composite
def votes(draw: st.DrawFn) -> GovMessage:
    key, issued = draw(keys), draw(u63)
    bound = draw(st.booleans())
    return sign_vote(key, draw(st.binary(min_size=32, max_size=32)), draw(st.booleans()),
                     stake=draw(stakes(key, issued)), issued_at=issued,
                     account=draw(addr) if bound else None,
                     binding=draw(st.binary(min_size=65, max_size=65)) if bound else None)


@st.composite
def charges(draw: st.DrawFn) -> E.ChargeBody:
    amount, quality = draw(amounts), draw(st.integers(0, 1000))
    preset = draw(st.sampled_from(sorted(PRESETS)))
    return E.ChargeBody(draw(blob), draw(text), draw(keys).public_key, draw(keys).public_key,
                        draw(amounts), amount, preset, quality,
                        E.ChargeParts.of(split(amount, PRESETS[preset], quality)), draw(blob),
                        draw(blob))


@st.composite
def vouchers(draw: st.DrawFn) -> VoucherBody:
    amount = draw(amounts)
    return VoucherBody(draw(st.sampled_from(["signed", "held"])), draw(addr), draw(addr),
                       draw(addr), draw(st.binary(min_size=16, max_size=16)), amount,
                       draw(st.integers(amount, U63)), draw(st.binary(min_size=65, max_size=65)))


claims = st.builds(RedeemedClaim, addr, u63, u63)
pubkeys = keys.map(lambda k: k.public_key)
bodies: st.SearchStrategy[E.EntryBody] = st.one_of(
    st.builds(E.FaucetGrant, pubkeys, u63, text),
    charges(),
    st.builds(E.ReceiptBody, blob, pubkeys, pubkeys, u63, blob),
    stakes().map(E.StakeBody),
    st.builds(E.SlashBody, pubkeys, u63, text, blob, text),
    vouchers(),
    st.builds(RedemptionBody, addr, addr, st.text(max_size=66), u63, u63,
              st.lists(claims, min_size=1, max_size=4).map(tuple)),
)

# --- the decoders under attack, each with its valid encodings ----------------------


@dataclass(frozen=True)
class Target:
    valid: st.SearchStrategy[bytes]
    #: Decode and verify what decoded; returns its re-encoding.
    open: Callable[[bytes], bytes]


def _open_stake(data: bytes) -> bytes:
    decl = StakeDeclaration.decode(data)
    verify_stake(decl)
    return decl.encode()


def _open_gov(data: bytes) -> bytes:
    message = decode_message(data)
    verify_message(message)
    return message.encode()


def _open_body(data: bytes) -> bytes:
    seq, at_ms, body = E.decode_body(data)
    return E.encode_body(seq, at_ms, body)


def _open_wire(data: bytes) -> bytes:
    return decode_wire(data).raw


wire_messages = st.sampled_from(sorted(STRATEGIES)).flatmap(lambda t: STRATEGIES[t])
TARGETS = {
    "canonical_record": Target(values.map(canonical.encode),
                               lambda d: canonical.encode(canonical.decode(d))),
    "canonical_wire": Target(
        values.map(lambda v: canonical.encode(v, canonical.WIRE)),
        lambda d: canonical.encode(canonical.decode(d, canonical.WIRE), canonical.WIRE)),
    "protocol_message": Target(wire_messages.map(lambda m: sign(m, CONSUMER).raw), _open_wire),
    "stake": Target(stakes().map(StakeDeclaration.encode), _open_stake),
    "proposal": Target(proposals().map(lambda m: m.encode()), _open_gov),
    "vote": Target(votes().map(lambda m: m.encode()), _open_gov),
    "ledger_body": Target(
        st.tuples(st.integers(1, U63), u63, bodies).map(lambda t: E.encode_body(*t)),
        _open_body),
}


def _attack(target: Target, data: bytes) -> None:
    try:
        again = target.open(data)
    except ALLOWED:
        return
    assert again == data, "bytes that decode must be the one encoding of what they hold"


# --- byte-level and structure-level mutations -------------------------------------


@st.composite
def byte_mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend", "set"]))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[at] = draw(st.sampled_from([0xC0, 0xC2, 0xC3, 0xCA, 0xCB, 0xCF, 0xD3, 0xDE,
                                             0xDC, 0x80, 0x90, 0xA0, 0xC4, 0xFF]))
    return bytes(data)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a decoded value: the keys and indices that lead to it."""
    inner: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            inner += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            inner += _paths(item, (*path, i))
    return [path, *inner]


def _tamper(value: Any, path: tuple[Any, ...], draw: st.DrawFn) -> Any:
    # Replace the value at `path`; at a map, maybe remove or add a key instead.
    if path:
        head, rest = path[0], path[1:]
        if isinstance(value, dict):
            return {**value, head: _tamper(value[head], rest, draw)}
        return [*value[:head], _tamper(value[head], rest, draw), *value[head + 1:]]
    op = draw(st.sampled_from(["replace", "remove", "add"]))
    if isinstance(value, dict) and value and op == "remove":
        key = draw(st.sampled_from(sorted(value)))
        return {k: v for k, v in value.items() if k != key}
    if isinstance(value, dict) and op == "add":
        return {**value, draw(text): draw(values)}
    return draw(values | st.floats(allow_nan=False))


@st.composite
def structure_mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    value = msgpack.unpackb(raw, raw=False)
    paths = _paths(value)
    # A depth first, then a place at that depth: a top-level field is as likely as a leaf.
    depth = draw(st.integers(0, max(len(p) for p in paths)))
    path = draw(st.sampled_from([p for p in paths if len(p) == depth]))
    return canonical.encode(_tamper(value, path, draw), canonical.WIRE)


@st.composite
def attacks(draw: st.DrawFn, target: Target) -> bytes:
    raw = draw(target.valid)
    kind = draw(st.sampled_from(["bytes", "structure", "random", "optional"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    if kind == "optional":  # an optional key left out when unset, sent anyway
        value = msgpack.unpackb(raw, raw=False)
        if isinstance(value, dict):
            value[draw(st.sampled_from(OPTIONAL_KEYS))] = draw(st.none() | values)
        return canonical.encode(value, canonical.WIRE)
    return draw(structure_mutations(raw) if kind == "structure" else byte_mutations(raw))


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(FUZZ, max_examples=ATTACKS)
@given(data=st.data())
def test_attacker_bytes_raise_only_protocol_errors(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    _attack(target, data.draw(attacks(target)))


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_valid_encodings_decode_verify_and_reencode_to_themselves(
        name: str, data: st.DataObject) -> None:
    raw = data.draw(TARGETS[name].valid)
    assert TARGETS[name].open(raw) == raw


@FUZZ
@given(stakes())
def test_stake_declarations_round_trip(decl: StakeDeclaration) -> None:
    assert StakeDeclaration.decode(decl.encode()) == decl


@FUZZ
@given(proposals() | votes())
def test_governance_messages_round_trip(message: GovMessage) -> None:
    assert decode_message(message.encode()) == message


@FUZZ
@given(st.integers(1, U63), u63, bodies)
def test_ledger_bodies_round_trip(seq: int, at_ms: int, body: E.EntryBody) -> None:
    assert E.decode_body(E.encode_body(seq, at_ms, body)) == (seq, at_ms, body)


@FUZZ
@given(values)
def test_canonical_values_round_trip(value: object) -> None:
    assert canonical.decode(canonical.encode(value)) == value


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("depth", [200, 5_000, 200_000])
def test_deep_nesting_is_refused_not_a_crash(name: str, depth: int) -> None:
    for data in (b"\x91" * depth + b"\xc0", b"\x81\xa1k" * depth + b"\xc0"):
        _attack(TARGETS[name], data)

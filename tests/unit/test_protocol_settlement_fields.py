"""The settlement fields on the wire (JobRequest payer, JobAccept payee, Receipt voucher):
absent when None, so older peers' messages decode and keep their signatures; bounded."""

from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import JobAccept, JobRequest, Receipt, decode, sign
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.schema import to_wire

CONSUMER, PROVIDER = NodeIdentity.generate(), NodeIdentity.generate()


def request(**changes: object) -> JobRequest:
    base = JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                      kind="generate", max_price_per_1k=10, issued_at=1, expires_at=2,
                      prompt="hi")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_without_settlement_the_encoding_has_no_new_keys() -> None:
    body = to_wire(request())
    assert not {"payer", "payer_binding"} & body.keys()
    receipt = Receipt(os.urandom(16), bytes(32), 5, PROVIDER.peer_id)
    assert not {"cumulative", "voucher"} & to_wire(receipt).keys()


def test_an_older_peers_message_decodes_with_its_signature() -> None:
    # What a peer without the fields signs: the map without them (built by hand here).
    msg = request()
    body = {k: v for k, v in to_wire(msg).items()}
    sig = CONSUMER.sign(_signing_payload(JobRequest.TYPE, body, CONSUMER.public_key))
    raw = msgpack.packb({"body": body, "from": CONSUMER.public_key, "sig": sig,
                         "t": JobRequest.TYPE, "v": 1}, use_bin_type=True)
    assert decode(raw).msg == msg


def test_settlement_fields_round_trip() -> None:
    msg = request(payer=bytes(range(20)), payer_binding=bytes(65))
    assert decode(sign(msg, CONSUMER).raw).msg == msg
    accept = JobAccept(os.urandom(16), 10, os.urandom(32), payee=bytes(20), payee_binding=bytes(65))
    assert decode(sign(accept, PROVIDER).raw).msg == accept
    receipt = Receipt(os.urandom(16), bytes(32), 5, PROVIDER.peer_id, cumulative=9,
                      voucher=bytes(65))
    assert decode(sign(receipt, CONSUMER).raw).msg == receipt


def test_an_explicit_nil_is_not_canonical() -> None:
    signed = sign(request(), CONSUMER)
    envelope = msgpack.unpackb(signed.raw, raw=False)
    envelope["body"]["payer"] = None
    with pytest.raises(DecodeError):
        decode(msgpack.packb(envelope, use_bin_type=True))


@pytest.mark.parametrize("changes", [
    {"payer": bytes(19), "payer_binding": bytes(65)},
    {"payer": bytes(20), "payer_binding": bytes(64)},
    {"payer": bytes(20)},
    {"payer_binding": bytes(65)},
])
def test_malformed_payer_fields_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        sign(request(**changes), CONSUMER)


def test_a_receipt_voucher_needs_its_cumulative_and_covers_the_amount() -> None:
    with pytest.raises(ValidationError):
        Receipt(os.urandom(16), bytes(32), 5, PROVIDER.peer_id, voucher=bytes(65))
    with pytest.raises(ValidationError):
        Receipt(os.urandom(16), bytes(32), 5, PROVIDER.peer_id, cumulative=4, voucher=bytes(65))

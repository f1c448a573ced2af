"""Model metadata in adverts (family, file size, modification time) for /api/tags and
/api/show through the network: absent when None, so older providers' adverts decode
and keep their signatures; bounded like every field."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import Advert, decode, sign
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.messages import AdvertHardware, ModelOffer
from p2pinfer.protocol.schema import to_wire

PROVIDER = NodeIdentity.generate()
OFFER = ModelOffer("smollm2:135m", "ab" * 32, "135M", "Q4_1", 8192, 1000, 2000, 200)


def advert(*offers: ModelOffer) -> Advert:
    return Advert(models=offers, hardware=AdvertHardware("cpu", 2, 1024, ()), engine="x",
                  stake=0, capacity=1, listen_addrs=(), seq=1, issued_at=1, ttl_ms=60_000)


def test_an_older_providers_advert_decodes_with_its_signature() -> None:
    msg = advert(OFFER)
    body = to_wire(msg)
    assert not {"family", "size_bytes", "modified_at"} & body["models"][0].keys()
    sig = PROVIDER.sign(_signing_payload(Advert.TYPE, body, PROVIDER.public_key))
    raw = msgpack.packb({"body": body, "from": PROVIDER.public_key, "sig": sig,
                         "t": Advert.TYPE, "v": 1}, use_bin_type=True)
    decoded = decode(raw).msg
    assert decoded == msg
    assert decoded.models[0].family is None and decoded.models[0].size_bytes is None


def test_metadata_round_trips_signed() -> None:
    offer = dataclasses.replace(OFFER, family="llama", size_bytes=91_000_000_000,
                                modified_at=1_700_000_000_000)
    assert decode(sign(advert(offer), PROVIDER).raw).msg.models[0] == offer


@pytest.mark.parametrize("changes", [{"family": ""}, {"family": "x" * 65},
                                     {"size_bytes": -1}, {"modified_at": 2**63}])
def test_metadata_out_of_bounds_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        to_wire(dataclasses.replace(OFFER, **changes))  # type: ignore[arg-type]


def test_an_explicit_nil_is_not_canonical() -> None:
    envelope = msgpack.unpackb(sign(advert(OFFER), PROVIDER).raw, raw=False)
    envelope["body"]["models"][0]["family"] = None
    with pytest.raises(DecodeError):
        decode(msgpack.packb(envelope, use_bin_type=True))

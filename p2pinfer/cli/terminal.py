"""Text from the network on a terminal: shown, never obeyed.

An answer comes from a provider, any provider; printed raw, its control characters
would reach the user's terminal, which obeys them: OSC 52 sets the clipboard, SGR 8
hides what follows (the "charged" line after the answer), cursor moves and carriage
returns overwrite lines already printed (docs/security.md, attack 62). On a terminal,
`terminal_safe` shows each control character instead (caret notation, `^[` for ESC);
newlines and tabs stay. Piped or redirected, the text is written as it came.
"""

from __future__ import annotations

import re
import sys

from p2pinfer.protocol.schema import CONTROLS


def terminal_safe(text: str) -> str:
    """`text` with every control character but newline and tab shown, not sent (a CR
    before a newline is dropped: Windows line ends print as lines). The characters are
    those a name on the wire may not hold (`schema.CONTROLS`)."""
    return CONTROLS.sub(_shown, text.replace("\r\n", "\n"))


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in (0x09, 0x0A):  # tab and newline: an answer's own layout
        return match.group()
    if code < 0x20:
        return "^" + chr(code + 64)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def on_terminal() -> bool:
    """Whether stdout is a terminal (what `for_stdout` cleans for)."""
    return sys.stdout.isatty()


def for_stdout(text: str) -> str:
    """`text` as it may be written to stdout: made safe on a terminal, as is otherwise."""
    return terminal_safe(text) if on_terminal() else text

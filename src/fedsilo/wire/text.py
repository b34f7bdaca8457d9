"""Text from a silo, made safe to show: no control character reaches a console, a log, the report or MLflow.

A failure's reason (and anything else a silo writes in words) comes from the other side of a
trust boundary. A terminal obeys what it prints: an escape sequence can clear the operator's
screen, move the cursor and draw a line fedsilo never wrote, a carriage return can overwrite the
line it is on, and Unicode's bidirectional controls can show text in another order than it is.
:func:`printable` is applied once where silos' words enter the server's records (the round's
:class:`~fedsilo.server.gather.RoundLog`) and where any error becomes the CLI's one line.

What it keeps and what goes (tests pin it):

- tab, newline, carriage return, vertical tab and form feed become a space, and every run of
  whitespace one space: a reason is one line, and a tab would break the console's columns;
- every other control character (C0, DEL and C1: ESC and the one-byte CSI included) is removed,
  as are the bidirectional controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069);
- printable text in any script is kept as it is.
"""

from __future__ import annotations

import re
import unicodedata

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = "".join(
    re.escape(chr(c)) for c in range(0xA0) if unicodedata.category(chr(c)) == "Cc" and not chr(c).isspace()
)
_DROP = re.compile(f"[{_CONTROLS}{_BIDI}]")


def printable(text: str) -> str:
    """``text`` on one line with no control characters (see the module's docstring for the rules)."""
    return " ".join(_DROP.sub("", text).split())

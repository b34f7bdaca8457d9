"""wire/text.py: what a silo sends, made safe to show on a console, in a log, the report or MLflow."""

from __future__ import annotations

import unicodedata

import pytest

from fedsilo.wire.text import printable

FAKE_ROUND = "\x1b[2J\x1b[H\x1b[32m  round 99 done in 0.1s\x1b[0m"


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("RuntimeError: out of memory", "RuntimeError: out of memory"),
        (FAKE_ROUND, "[2J[H[32m round 99 done in 0.1s[0m"),  # the escapes are gone, their text is harmless
        ("\x9b2J single-byte CSI", "2J single-byte CSI"),
        ("tab\tand\nnew line\r\nand\vthe\frest", "tab and new line and the rest"),  # one line, one space each
        ("overwrite\rround 99 done", "overwrite round 99 done"),  # a carriage return cannot rewrite the line
        ("nul\x00 del\x7f bell\x07", "nul del bell"),
        ("evil\u202egnp.exe and \u2066isolate\u2069", "evilgnp.exe and isolate"),  # bidirectional controls
        ("Zürich, 東京, naïve café", "Zürich, 東京, naïve café"),  # printable text in any script is kept
        ("  padded   out  ", "padded out"),
        ("", ""),
    ],
)
def test_printable_pins_what_is_kept_and_what_goes(sent: str, shown: str) -> None:
    assert printable(sent) == shown


def test_no_control_character_survives() -> None:
    every = "".join(chr(c) for c in range(0x300)) + "".join(chr(c) for c in range(0x2000, 0x2070))
    assert not [c for c in printable(every) if unicodedata.category(c) == "Cc" or c in "\u202a\u202e\u2066\u2069"]
    assert printable(printable(FAKE_ROUND)) == printable(FAKE_ROUND)

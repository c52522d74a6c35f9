"""Text from the network, made safe to show on a terminal.

Users and peers name things (API keys, models, devices, versions, peer ids) and models write
answers; any of it may hold rich markup (``[link=…]``) or terminal control sequences that
move the cursor, retitle the window or rewrite what was printed before. ``printable``
drops the control sequences; ``cell`` makes the rest a rich ``Text``, which rich prints
literally, never as markup.
"""

from __future__ import annotations

import re

from rich.text import Text

_CONTROLS = re.compile(
    r"""
    \x1b\[[0-?]*[\x20-/]*[@-~]?            # CSI: ESC [ parameters, intermediates, final
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?     # OSC, up to BEL or ST
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?          # DCS, SOS, PM, APC, up to ST
  | \x1b[\x20-/]*[\x30-~]?                 # any other escape
  | [\x00-\x08\x0b-\x1f\x7f-\x9f]          # every other C0 and C1 control, DEL
    """,
    re.VERBOSE,
)


def printable(text: str) -> str:
    """``text`` without terminal control sequences; newlines and tabs stay. A sequence
    split across two pieces of a stream is dropped piece by piece: what is left of it
    prints as plain characters."""
    return _CONTROLS.sub("", text)


def cell(text: object, style: str = "") -> Text:
    """``text`` as rich prints it literally: no markup, no control sequences."""
    return Text(printable(str(text)), style=style)

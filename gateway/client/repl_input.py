"""Reading what the person types: line editing, history, completion and multi-line input.

Readline brings editing, history and tab completion where Python has it (not on a plain
Windows install: there input still works, without those). Deciding what completes and
how lines join into one message is pure, so tests need no terminal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import readline
except ImportError:
    readline = None  # type: ignore[assignment]

HISTORY_LENGTH = 1000
FENCE = '"""'


class Assembler:
    """Joins typed lines into messages.

    A line ending in a backslash continues on the next one; a line opening with ``\"\"\"``
    starts a block (for pasting) that runs until a line ending with ``\"\"\"``.
    """

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._fenced = False

    @property
    def pending(self) -> bool:
        """True while a message is started but not finished."""
        return self._fenced or bool(self._lines)

    def reset(self) -> None:
        self._lines, self._fenced = [], False

    def feed(self, line: str) -> str | None:
        """The finished message, or None while more lines are to come."""
        if self._fenced:
            stripped = line.rstrip()
            if not stripped.endswith(FENCE):
                self._lines.append(line)
                return None
            self._keep(stripped[: -len(FENCE)])
            return self._finish()
        if not self._lines and line.lstrip().startswith(FENCE):
            rest = line.lstrip()[len(FENCE) :]
            if rest.rstrip().endswith(FENCE):  # """all on one line"""
                return rest.rstrip()[: -len(FENCE)]
            self._fenced = True
            self._keep(rest)
            return None
        if line.endswith("\\"):
            self._lines.append(line[:-1])
            return None
        self._lines.append(line)
        return self._finish()

    def _keep(self, text: str) -> None:
        # Text beside a fence is part of the message; an empty remainder is not a line.
        if text.strip():
            self._lines.append(text)

    def _finish(self) -> str:
        text = "\n".join(self._lines)
        self.reset()
        return text


def candidates(
    before: str,
    word: str,
    commands: Sequence[str],
    models: Sequence[str],
    settings: Sequence[str],
) -> list[str]:
    """What ``word`` can complete to, given the text ``before`` it on the line."""
    head = before.split()
    if not head:
        return [c for c in commands if c.startswith(word)] if word.startswith("/") else []
    if head == ["/model"]:
        return [m for m in models if m.startswith(word)]
    if head == ["/set"]:
        return [s for s in settings if s.startswith(word)]
    return []


class LineReader:
    """``input()`` with readline's editing, a bounded history file and tab completion.

    ``complete(before, word)`` lists the completions of the word being typed.
    """

    def __init__(self, history: Path | None, complete: Callable[[str, str], list[str]]) -> None:
        self._history = history
        self._complete = complete
        self._matches: list[str] = []
        if readline is None:
            return
        readline.set_completer_delims(" \t\n")
        readline.set_completer(self._completer)
        if "libedit" in (readline.__doc__ or ""):  # macOS's readline speaks another dialect
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        readline.set_history_length(HISTORY_LENGTH)
        if history is not None:
            with contextlib.suppress(OSError):
                readline.read_history_file(history)

    def read(self, prompt: str) -> str:
        """One line; ``EOFError`` on Ctrl-D, ``KeyboardInterrupt`` on Ctrl-C."""
        return input(prompt)

    def save_history(self) -> None:
        """Write the history now, so a killed session loses nothing typed before."""
        if readline is None or self._history is None:
            return
        try:
            self._history.parent.mkdir(parents=True, exist_ok=True)
            # What people type to a model is theirs alone to read.
            os.close(os.open(self._history, os.O_WRONLY | os.O_CREAT, 0o600))
            readline.write_history_file(self._history)
        except OSError:
            pass  # history is a convenience: a read-only home must not stop the chat

    def _completer(self, word: str, state: int) -> str | None:
        if state == 0 and readline is not None:
            before = readline.get_line_buffer()[: readline.get_begidx()]
            self._matches = self._complete(before, word)
        return self._matches[state] if state < len(self._matches) else None

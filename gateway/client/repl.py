"""The chat loop behind ``bitinglip repl`` (the command is ``node.cli.repl``).

Answers stream token by token and the conversation is kept as context. Ctrl-C during an
answer closes its HTTP stream, which the gateway turns into a cancellation on the node;
at the prompt it clears the line. Ctrl-D or ``/quit`` leaves.
"""

from __future__ import annotations

import time

from gateway.client.api_client import ClientError, GatewayClient
from gateway.client.repl_commands import COMMANDS, SETTINGS, Commands, Quit, Session
from gateway.client.repl_input import Assembler, LineReader, candidates
from gateway.client.repl_render import Screen, stats_line
from keys.files import default_data_dir


class Repl:
    def __init__(self, client: GatewayClient, session: Session, screen: Screen) -> None:
        self.client = client
        self.session = session
        self.screen = screen
        self.commands = Commands(client, session, screen)
        self.reader = LineReader(default_data_dir() / "repl_history", self._complete)

    def run(self) -> None:
        s = self.session
        served = f"chatting with {s.model}" if s.model else "no model is served yet: try /models"
        self.screen.note(f"{self.client.url}: {served}. /help for commands, Ctrl-D to leave.")
        assembler = Assembler()
        while True:
            try:
                line = self.reader.read(self.screen.prompt(s.model, assembler.pending))
            except KeyboardInterrupt:  # drop what was typed, keep the session
                assembler.reset()
                self.screen.piece("\n")
                continue
            except EOFError:
                self.screen.piece("\n")
                return
            self.reader.save_history()
            # A bracketed paste can bring several lines at once.
            for part in line.split("\n"):
                text = assembler.feed(part)
                if text is None or not text.strip():
                    continue
                try:
                    self._handle(text)
                except Quit:
                    return

    def _handle(self, text: str) -> None:
        if text.startswith("/"):
            try:
                self.commands.run(text.strip())
            except KeyboardInterrupt:
                self.screen.note("stopped")
            return
        self.answer(text)

    def answer(self, text: str) -> None:
        """Send ``text`` with the conversation so far and stream the answer."""
        s = self.session
        if s.model is None:
            self.screen.error("no model to answer: /models lists them, /model NAME picks one")
            return
        s.messages.append({"role": "user", "content": text})
        pieces: list[str] = []
        started = time.monotonic()
        try:
            with self.client.chat_stream(s.model, s.conversation(), **s.settings) as stream:
                for piece in stream:
                    self.screen.piece(piece)
                    pieces.append(piece)
        except KeyboardInterrupt:
            # The stream is closed by now; what was shown stays part of the conversation.
            self._end(pieces)
            self.screen.note("stopped")
            return
        except ClientError as exc:
            if pieces:
                self.screen.end_answer()
            s.messages.pop()  # the question goes unanswered: asking again must not repeat it
            self.screen.error(str(exc))
            return
        self._end(pieces)
        tokens = stream.usage.get("completion_tokens", len(pieces))
        self.screen.note(stats_line(tokens, time.monotonic() - started, stream.node))

    def _end(self, pieces: list[str]) -> None:
        if pieces:
            self.screen.end_answer()
            self.session.messages.append({"role": "assistant", "content": "".join(pieces)})
        else:
            self.session.messages.pop()

    def _complete(self, before: str, word: str) -> list[str]:
        names = [f"/{name}" for name in COMMANDS]
        return candidates(before, word, names, self.session.models, list(SETTINGS))

"""The REPL's conversation state and its slash commands.

``COMMANDS`` is the table ``/help`` shows and completion offers; ``/name`` runs
``Commands.cmd_name``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.client.api_client import TEXT_TASK, ClientError, GatewayClient, UnknownModel
from gateway.client.repl_media import MEDIA_COMMANDS, MEDIA_TASKS, MediaCommands, new_file
from gateway.client.repl_render import (
    Screen,
    help_table,
    models_table,
    peers_table,
    usage_table,
)
from protocols.generation import MAX_NEW_TOKENS

# name -> (arguments, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("", "this list"),
    "models": ("", "the models the swarm serves, with the peers serving each"),
    "model": ("NAME", "chat with another model (the conversation stays)"),
    "system": ("[TEXT]", "set the system prompt; without TEXT, drop it"),
    "set": ("[NAME VALUE]", "set temperature, top_p or max_tokens; alone, show them"),
    "image": ("PROMPT", "generate an image with an image model and save it as a PNG"),
    **MEDIA_COMMANDS,
    "usage": ("", "your usage per day and model, and your limits"),
    "peers": ("", "every peer the gateway knows, with its load"),
    "clear": ("", "forget the conversation (the system prompt and settings stay)"),
    "save": ("FILE", "write the conversation, model and settings to FILE as JSON"),
    "quit": ("", "leave (Ctrl-D does too)"),
}

TIPS = (
    'End a line with \\ to go on to the next one, or paste between lines of """.\n'
    "Ctrl-C stops an answer or clears the line; Ctrl-D or /quit leaves."
)


@dataclass(frozen=True)
class Setting:
    kind: type[float] | type[int]
    low: float
    high: float
    low_open: bool
    wanted: str

    def parse(self, name: str, text: str) -> float | int:
        """The value, or ``ValueError`` with a sentence saying what is wanted."""
        try:
            value = self.kind(text)
        except ValueError:
            value = math.nan
        below = value <= self.low if self.low_open else value < self.low
        if math.isnan(value) or below or value > self.high:
            raise ValueError(f"{name} takes {self.wanted}, not {text!r}")
        return value


SETTINGS = {
    "temperature": Setting(float, 0.0, 2.0, False, "a number from 0 to 2"),
    "top_p": Setting(float, 0.0, 1.0, True, "a number above 0, at most 1"),
    "max_tokens": Setting(int, 1, MAX_NEW_TOKENS, False, f"a whole number 1 to {MAX_NEW_TOKENS}"),
}


class Quit(Exception):
    """The person asked to leave."""


@dataclass
class Session:
    """The conversation and the choices that shape the next answer."""

    model: str | None
    system: str | None = None
    # What /set chose; anything not here is the model's own default (the node applies
    # its generation config, e.g. greedy for a model that does not ask to sample).
    settings: dict[str, float | int] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    image_model: str | None = None
    image_dir: Path = Path()
    image_size: str | None = None  # "WxH"; None: the gateway's default
    models: list[str] = field(default_factory=list)  # as last listed: for completion

    def conversation(self) -> list[dict[str, str]]:
        """What the model is sent: the system prompt, then every turn so far."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "messages": self.conversation(),
        }


class Commands(MediaCommands):
    def __init__(self, client: GatewayClient, session: Session, screen: Screen) -> None:
        self.client = client
        self.session = session
        self.screen = screen
        self._handlers: dict[str, Callable[[str], None]] = {
            name: getattr(self, f"cmd_{name}") for name in COMMANDS
        }

    def run(self, line: str) -> None:
        """Run ``/name args``; errors are shown, ``Quit`` is raised to leave."""
        name, _, arg = line[1:].partition(" ")
        handler = self._handlers.get(name)
        if handler is None:
            self.screen.error(f"unknown command /{name}: /help lists the commands")
            return
        try:
            handler(arg.strip())
        except ClientError as exc:
            self.screen.error(str(exc))

    def cmd_help(self, arg: str) -> None:
        self.screen.show(help_table(COMMANDS, self.screen.width))
        self.screen.note(TIPS)

    def cmd_models(self, arg: str) -> None:
        models = self.client.models()
        tasks = self.client.tasks(models)
        self.session.models = [m for m, task in tasks.items() if task == TEXT_TASK]
        self.screen.show(models_table(models, tasks, self.session.model, self.screen.width))

    def cmd_model(self, arg: str) -> None:
        if not arg:
            current = self.session.model or "no model"
            self.screen.say(f"chatting with {current}: /model NAME changes it")
            return
        tasks = self.client.tasks()
        self.session.models = [m for m, task in tasks.items() if task == TEXT_TASK]
        problem = unchattable(tasks, arg)
        if problem:
            self.screen.error(problem)
            return
        self.session.model = arg
        self.screen.say(f"now chatting with {arg}")

    def cmd_system(self, arg: str) -> None:
        self.session.system = arg or None
        self.screen.say("system prompt set" if arg else "system prompt dropped")

    def cmd_set(self, arg: str) -> None:
        if not arg:
            for known in SETTINGS:
                chosen = self.session.settings.get(known)
                where = "the model's default" if chosen is None else f"{chosen} (set here)"
                self.screen.say(f"{known}: {where}")
            return
        name, _, value = arg.partition(" ")
        setting = SETTINGS.get(name)
        if setting is None or not value.strip():
            self.screen.error(f"use /set NAME VALUE, with NAME one of {', '.join(SETTINGS)}")
            return
        try:
            self.session.settings[name] = setting.parse(name, value.strip())
        except ValueError as exc:
            self.screen.error(str(exc))
            return
        self.screen.say(f"{name} set to {self.session.settings[name]}")

    def cmd_image(self, arg: str) -> None:
        if not arg:
            self.screen.error("use /image PROMPT")
            return
        model = self.session.image_model or next(iter(self.client.image_models()), None)
        if model is None:
            self.screen.error("no node serves an image model now; --image-model names one")
            return
        self.screen.note(f"generating with {model}…")
        for data in self.client.image(model, arg, size=self.session.image_size):
            try:
                path = new_file(self.session.image_dir, "image", ".png")
                path.write_bytes(data)
            except OSError as exc:
                self.screen.error(f"cannot save the image in {self.session.image_dir}: {exc}")
                return
            self.screen.say(f"saved {path}")

    @property
    def save_dir(self) -> Path:
        return self.session.image_dir

    def cmd_usage(self, arg: str) -> None:
        self.screen.show(usage_table(self.client.usage(), self.screen.width))

    def cmd_peers(self, arg: str) -> None:
        self.screen.show(peers_table(self.client.peers(), self.screen.width))

    def cmd_clear(self, arg: str) -> None:
        self.session.messages.clear()
        self.screen.say("conversation cleared")

    def cmd_save(self, arg: str) -> None:
        if not arg:
            self.screen.error("use /save FILE")
            return
        path = Path(arg).expanduser()
        try:
            path.write_text(json.dumps(self.session.to_json(), indent=2, ensure_ascii=False))
        except OSError as exc:
            self.screen.error(f"cannot write {path}: {exc.strerror or exc}")
            return
        self.screen.say(f"saved {len(self.session.messages)} messages to {path}")

    def cmd_quit(self, arg: str) -> None:
        raise Quit()


def unchattable(tasks: dict[str, str], name: str) -> str | None:
    """Why the model ``name`` cannot be chatted with, or None if it can."""
    chat = [m for m, task in tasks.items() if task == TEXT_TASK]
    if name in chat:
        return None
    if name in tasks:
        listed = ", ".join(chat) or "none"
        does = MEDIA_TASKS.get(tasks[name], "makes images")
        return f"{name!r} {does}, it does not chat (chat models: {listed})"
    return str(UnknownModel(name, chat, ""))

"""What users and peers name, and what models write, reaches the terminal as plain text:
rich markup prints literally and terminal control sequences are dropped."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console, RenderableType

from gateway.client.peer_view import render
from gateway.client.repl_render import Screen, models_table, peers_table, usage_table
from gateway.client.terminal import printable
from protocols.peers import PeerModel
from tests.unit.gateway.client.test_peer_view import status

MARKUP = "[bold red]x[/]"
LINK = "[link=https://evil.example]click[/link]"


def shown(renderable: RenderableType) -> str:
    console = Console(record=True, width=400, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    return console.export_text(styles=False)


def styled(renderable: RenderableType) -> str:
    """What reaches the terminal, escapes and all."""
    out = io.StringIO()
    Console(file=out, width=400, color_system="truecolor", force_terminal=True).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "left"),
    [
        ("plain\ttext\nand more", "plain\ttext\nand more"),
        ("a\x1b[31mred\x1b[0m b", "ared b"),
        ("\x1b[2J\x1b[Hwiped", "wiped"),
        ("\x1b]0;new title\x07after", "after"),
        ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1bP+q\x1b\\dcs", "dcs"),
        ("bell\x07 back\x08 cr\r del\x7f c1\x9b31m", "bell back cr del c131m"),
        ("split \x1b", "split "),  # the rest of the sequence comes in the next piece
        ("\x1b[", ""),
        ("\x1b7saved\x1b8", "saved"),
        ("émoji 🙂 and 中文", "émoji 🙂 and 中文"),
    ],
)
def test_printable_drops_control_sequences_only(text: str, left: str) -> None:
    assert printable(text) == left


def test_what_peers_say_is_printed_literally_in_the_peers_table() -> None:
    node = status("12D3KooW" + "n" * 8, models={MARKUP: "ready", LINK: "loading"})
    assert node.hardware is not None
    node = replace(
        node,
        role="[blink]node",
        version=LINK,
        addrs=[f"/dns/{MARKUP}/tcp/1"],
        hardware=replace(node.hardware, device_name=f"{MARKUP}\x1b]0;owned\x07"),
    )
    node = replace(node, models=[*node.models, PeerModel("\x1b[2Jm", "text", "f", "ready")])
    text = shown(render([node]))
    for literal in (MARKUP, LINK, "[blink]node", f"/dns/{MARKUP}/tcp/1"):
        assert literal in text
    terminal = styled(render([node]))
    assert "\x1b]" not in terminal  # no hyperlink, no window title
    assert "\x1b[2J" not in terminal


def test_api_bodies_are_printed_literally_in_the_repl_tables() -> None:
    usage = {
        "data": [{"date": MARKUP, "model": LINK, "requests": "[i]3", "images": 0}],
        "totals": {"requests": 3},
        "limits": {"name": MARKUP},
    }
    text = shown(usage_table(usage))
    assert MARKUP in text and LINK in text and "[i]3" in text
    peer = {"peer_id": "x" * 8 + "[b]1234", "state": MARKUP, "inflight": "[u]", "capacity": 1}
    models = [{"id": LINK, "peers": [peer]}]
    text = shown(models_table(models, {LINK: MARKUP}, LINK))
    assert f"{LINK} *" in text and MARKUP in text and "[b]1234" in text and "[u]/1" in text
    node = status("12D3KooWAAAAnode1234").to_json() | {"role": MARKUP}
    assert MARKUP in shown(peers_table([node]))
    assert "\x1b]8" not in styled(models_table(models, {}, None))


def test_the_repl_prints_answers_and_errors_without_control_sequences() -> None:
    out = io.StringIO()
    screen = Screen(Console(file=out, width=200, color_system=None))
    screen.piece("Hello\x1b]0;pwned\x07 world\x1b[2J\n")
    screen.error(f"node said {MARKUP}\x1b[?1049h")
    screen.note(LINK)
    assert out.getvalue() == f"Hello world\nerror: node said {MARKUP}\n{LINK}\n"

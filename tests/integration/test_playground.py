"""The web playground in a real headless Chromium, against a real gateway and two nodes: one
echoing slowly (so a stream is seen growing, and can be stopped), one serving tiny random
diffusion, speech, transcription and picture-reading models.

Screenshots land in the test's tmp directory (``playground-*.png``).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Request, ViewportSize, expect

from gateway.routing.router import WAIT_AWAY
from tests.integration.axe import blocking
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_dashboard import PASSWORD, browser, open_page
from tests.integration.test_media_swarm import wait_tasks, wav
from tests.tiny_models import build_tiny_llava, build_tiny_sd, build_tiny_vits, build_tiny_whisper
from tests.unit.gateway.api.test_metrics import parse, value

__all__ = ["browser"]  # the dashboard's Chromium fixture, used here too

PER_MINUTE = 12
CONFIG = f"""\
[gateway]
default_plan = "play"

[gateway.plans.play]
requests_per_minute = {PER_MINUTE}
"""
WORD_DELAY = 0.1  # seconds per echoed word: a stream long enough to watch and to stop
PHONE: ViewportSize = {"width": 375, "height": 740}


@dataclass(frozen=True)
class Played:
    swarm: LocalSwarmFixture
    url: str
    sd: str
    vits: str
    whisper: str
    llava: str


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Played]:
    base = tmp_path_factory.mktemp("playground")
    sd = str(build_tiny_sd(base / "tiny-sd"))
    vits = str(build_tiny_vits(base / "tiny-vits"))
    whisper = str(build_tiny_whisper(base / "tiny-whisper"))
    llava = str(build_tiny_llava(base / "tiny-llava"))
    swarm = LocalSwarmFixture(base / "swarm")
    try:
        config = swarm.data_dir / "gateway.toml"
        config.write_text(CONFIG)
        swarm.start_gateway(config=config)
        boot = [swarm.addr("gateway")]
        echo = ["--echo-delay", str(WORD_DELAY), "--metrics-port", "0"]
        swarm.start_node("echo", boot, ["echo"], echo)
        swarm.start_node("media", boot, [sd, vits, whisper, llava], ["--metrics-port", "0"])
        swarm.wait_ready(["echo", "media"])
        wanted = {"echo": "text-generation", sd: "text-to-image", vits: "text-to-speech"}
        wanted |= {whisper: "speech-to-text", llava: "image-to-text"}
        wait_tasks(swarm.url(), swarm.token(), wanted)
        yield Played(swarm, swarm.url(), sd, vits, whisper, llava)
    finally:
        swarm.local.stop()


def signed_in(browser: Browser, url: str, user: str, problems: list[str]) -> Page:
    """A page whose user has just registered, with the playground in view."""
    page = open_page(browser, url, problems)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    return page


def tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    expect(page.get_by_role("tabpanel", name=name)).to_be_visible()


def session_token(page: Page) -> str:
    return str(page.evaluate("JSON.parse(sessionStorage.getItem('bitinglip.session')).token"))


def cancelled_on_node(played: Played, node: str = "echo", method: str = "generate") -> float:
    metrics = httpx.get(str(played.swarm.local.status(node)["metrics_url"]), timeout=10)
    return value(
        parse(metrics.text), "bitinglip_node_requests_total", method=method, status="cancelled"
    )


def wait_cancelled(played: Played, node: str = "echo", method: str = "generate") -> None:
    """Until the node counts one call cancelled (the gateway passes a hang-up on at once)."""
    deadline = time.monotonic() + 10
    while cancelled_on_node(played, node, method) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled_on_node(played, node, method) == 1


def test_chat_streams_keeps_the_conversation_stops_and_copies_as_code(
    played: Played, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = signed_in(browser, played.url, "chatter", problems)
    sent: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/chat/completions"):
            sent.append(request.post_data_json or {})

    page.on("request", on_request)
    chat = page.get_by_role("tabpanel", name="Chat")
    expect(chat.get_by_label("Model")).to_have_value("echo")
    # Every state the answer passes through, to see it grow token by token.
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll('#chat-log .assistant .turn-text');
            if (answers.length) window.seen.push(answers[answers.length - 1].textContent);
        }).observe(document.getElementById('chat-log'),
                   {subtree: true, childList: true, characterData: true});
    }""")

    chat.get_by_label("System prompt").fill("Answer in echoes.")
    chat.get_by_label("Temperature").fill("0.5")
    chat.get_by_label("Max tokens").fill("64")
    chat.get_by_label("Message", exact=True).fill("the swarm answers word by word")
    chat.get_by_role("button", name="Send").click()
    answers = page.locator("#chat-log .assistant .turn-text")
    expect(answers.last).to_have_text("the swarm answers word by word")
    meta = page.locator("#chat-meta")
    expect(meta).to_contain_text(f"Answered by node …{played.swarm.peer_id('echo')[-10:]}")
    expect(meta).to_contain_text("6 tokens")
    expect(meta).to_contain_text("tokens/s")
    grown = page.evaluate("[...new Set(window.seen)]")
    assert len(grown) >= 4 and grown[1] == "the", grown
    first = sent[-1]
    assert first["stream"] is True and first["temperature"] == 0.5 and first["max_tokens"] == 64

    # The next turn carries the whole conversation.
    chat.get_by_label("Message", exact=True).fill("and remembers")
    chat.get_by_label("Message", exact=True).press("Control+Enter")
    expect(answers.last).to_have_text("and remembers")
    roles = [m["role"] for m in sent[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"], sent[-1]
    page.screenshot(path=tmp_path / "playground-chat.png", full_page=True)

    # Stop aborts the stream, and the gateway cancels the call on its node.
    assert cancelled_on_node(played) == 0
    chat.get_by_label("Message", exact=True).fill(" ".join(f"word{i}" for i in range(300)))
    chat.get_by_role("button", name="Send").click()
    expect(answers.last).to_contain_text("word2")
    chat.get_by_role("button", name="Stop").click()
    expect(meta).to_have_text("Stopped: the call was cancelled on its node.")
    expect(chat.get_by_role("button", name="Send")).to_be_enabled()
    wait_cancelled(played)
    stopped = answers.last.inner_text()
    time.sleep(3 * WORD_DELAY)
    assert answers.last.inner_text() == stopped and "word299" not in stopped

    # "Copy as" shows the call as code that runs, naming the key in the environment only.
    token = session_token(page)
    env = dict(os.environ, BITINGLIP_API_KEY=token)
    chat.get_by_label("Message", exact=True).fill("copied call")
    runs: list[tuple[str, Callable[[str], list[str]]]] = [
        ("Copy as curl", lambda code: ["bash", "-c", code + " --no-progress-meter"]),
        ("Copy as Python", lambda code: [sys.executable, "-c", code]),
    ]
    for button, run in runs:
        chat.get_by_role("button", name=button).click()
        code = page.locator("#chat-code").inner_text()
        assert token not in code and "BITINGLIP_API_KEY" in code
        ran = subprocess.run(run(code), env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "copied" in ran.stdout and "call" in ran.stdout, ran.stdout
    assert problems == []


def test_image_tab_draws_and_offers_the_picture(
    played: Played, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = signed_in(browser, played.url, "painter", problems)
    tab(page, "Image")
    panel = page.get_by_role("tabpanel", name="Image")
    expect(panel.get_by_label("Model")).to_have_value(played.sd)
    panel.get_by_label("Prompt", exact=True).fill("a red cat")
    panel.get_by_label("Negative prompt").fill("blue")
    panel.get_by_label("Size").select_option("64x64")
    panel.get_by_label("Steps").fill("2")
    panel.get_by_label("Seed").fill("3")
    # Every step the page shows, to see them counted.
    page.evaluate("""() => {
        window.steps = [];
        new MutationObserver(() => window.steps.push(
            [document.getElementById('image-status').textContent,
             document.getElementById('image-bar').getAttribute('value')]))
          .observe(document.getElementById('image-status'), {childList: true, characterData: true});
    }""")
    panel.get_by_role("button", name="Generate").click()
    expect(page.locator("#image-progress")).to_be_visible()
    picture = page.get_by_role("img", name="a red cat")
    expect(picture).to_be_visible(timeout=60_000)
    assert picture.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    expect(page.locator("#image-meta")).to_contain_text("Seed 3")
    expect(page.locator("#image-progress")).to_be_hidden()
    seen = [tuple(s) for s in page.evaluate("window.steps")]
    # Steps done while one was being sent fold into the newest: the last is always shown.
    assert ("Step 2 of 2", "2") in seen and all(
        text == "Waiting for a node…" or re.fullmatch(r"Step [12] of 2", text) for text, _ in seen
    ), seen
    download = page.get_by_role("link", name="Download PNG")
    assert download.get_attribute("download") == "image-3.png"
    with page.expect_download() as caught:
        download.click()
    saved = tmp_path / "image.png"
    caught.value.save_as(saved)
    assert Image.open(saved).size == (64, 64)
    page.screenshot(path=tmp_path / "playground-image.png", full_page=True)

    # Stop aborts the stream half-way, and the gateway cancels the call on its node.
    assert cancelled_on_node(played, "media", "generate_image") == 0
    panel.get_by_label("Size").select_option("256x256")
    panel.get_by_label("Steps").fill("100")
    panel.get_by_role("button", name="Generate").click()
    status = page.locator("#image-status")
    expect(status).to_have_text(re.compile(r"Step ([2-9]|[1-9][0-9]) of 100"), timeout=60_000)
    panel.get_by_role("button", name="Stop").click()
    expect(status).to_have_text("Stopped: the call was cancelled on its node.")
    expect(panel.get_by_role("button", name="Generate")).to_be_enabled()
    wait_cancelled(played, "media", "generate_image")
    expect(page.locator("#image-error")).to_be_hidden()
    assert problems == []


def test_speech_tab_speaks_and_writes_down(
    played: Played, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = signed_in(browser, played.url, "speaker", problems)
    tab(page, "Speech")
    speech = page.locator("#speech-form")
    expect(speech.get_by_label("Model")).to_have_value(played.vits)
    speech.get_by_label("Text").fill("Hello world. A second sentence.")
    speech.get_by_label("Format").select_option("wav")
    speech.get_by_role("button", name="Speak").click()
    player = page.get_by_label("The speech")
    expect(player).to_be_visible(timeout=60_000)
    page.wait_for_function("document.getElementById('speech-audio').duration > 0")
    assert page.get_by_role("link", name="Download").get_attribute("download") == "speech.wav"

    listen = page.locator("#listen-form")
    expect(listen.get_by_label("Model")).to_have_value(played.whisper)
    listen.get_by_label("Audio file").set_input_files(
        {"name": "tone.wav", "mimeType": "audio/wav", "buffer": wav(2.0)}
    )
    listen.get_by_role("button", name="Transcribe").click()
    expect(page.locator("#listen-out")).to_be_visible(timeout=60_000)
    assert page.locator("#listen-out").inner_text().strip()
    page.screenshot(path=tmp_path / "playground-speech.png", full_page=True)
    assert problems == []


def test_vision_tab_streams_an_answer_about_a_picture(
    played: Played, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = signed_in(browser, played.url, "looker", problems)
    tab(page, "Vision")
    panel = page.get_by_role("tabpanel", name="Vision")
    expect(panel.get_by_label("Model")).to_have_value(played.llava)
    png = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(png, format="PNG")
    panel.get_by_label("Picture").set_input_files(
        {"name": "red.png", "mimeType": "image/png", "buffer": png.getvalue()}
    )
    expect(page.get_by_role("img", name="The picture to ask about")).to_be_visible()
    panel.get_by_label("Question").fill("What colour is it?")
    panel.get_by_role("button", name="Ask").click()
    meta = page.locator("#vision-meta")
    expect(meta).to_contain_text("Answered by node", timeout=60_000)
    expect(meta).to_contain_text(played.swarm.peer_id("media")[-10:])
    assert page.locator("#vision-out").inner_text().strip()
    page.screenshot(path=tmp_path / "playground-vision.png", full_page=True)
    assert problems == []


def test_a_refusal_reads_as_a_sentence_with_the_wait(played: Played, browser: Browser) -> None:
    problems: list[str] = []
    page = signed_in(browser, played.url, "hasty", problems)
    headers = {"Authorization": f"Bearer {session_token(page)}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(PER_MINUTE):
        answered = httpx.post(
            f"{played.url}/v1/chat/completions", json=body, headers=headers, timeout=30
        )
        assert answered.status_code == 200, answered.text
    page.get_by_label("Message", exact=True).fill("one more")
    page.get_by_role("button", name="Send").click()
    error = page.locator("#chat-error")
    expect(error).to_contain_text("Too many requests: ")
    expect(error).to_contain_text(re.compile(r"Try again in [0-9]+ s\.$"))
    # The turn that was refused is taken back, ready to send again.
    expect(page.locator("#chat-log .turn")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_have_value("one more")
    assert problems == []


def test_keyboard_phone_width_and_accessibility(
    played: Played, browser: Browser, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = open_page(browser, played.url, problems, audited=True)
    assert blocking(page) == []  # the sign-in view
    page.get_by_label("Username").fill("reader")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")  # no account yet: refused, in words
    expect(page.locator("#login-error")).to_be_visible()
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    expect(page.locator("#peers tbody tr")).to_have_count(3)
    found = blocking(page)
    assert found == [], "\n".join(found)  # the dashboard with the chat tab

    # Arrow keys move between tabs, each panel labelled by its tab.
    page.get_by_role("tab", name="Chat").focus()
    for name in ["Image", "Speech", "Vision"]:
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name=name)).to_be_focused()
        expect(page.get_by_role("tabpanel", name=name)).to_be_visible()
        assert blocking(page, "#playground") == [], name
    page.keyboard.press("Home")
    expect(page.get_by_role("tabpanel", name="Chat")).to_be_visible()
    page.keyboard.press("Tab")  # into the panel, then its first control
    page.keyboard.press("Tab")
    expect(page.get_by_role("tabpanel", name="Chat").get_by_label("Model")).to_be_focused()

    page.set_viewport_size(PHONE)
    for name in ["Chat", "Image", "Speech", "Vision"]:
        tab(page, name)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), name
        page.screenshot(path=tmp_path / f"playground-phone-{name.lower()}.png", full_page=True)
    send = page.get_by_role("tabpanel", name="Vision").get_by_role("button", name="Ask")
    box = send.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert blocking(page) == []

    # The dark scheme is audited as well: its colours are the page's own, not the light ones.
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 18, 22)"
    for name in ["Chat", "Image", "Speech", "Vision"]:
        tab(page, name)
        found = blocking(page)
        assert found == [], f"{name}, dark:\n" + "\n".join(found)
    page.screenshot(path=tmp_path / "playground-phone-dark.png", full_page=True)
    assert problems == []


def test_a_model_no_node_can_serve_reads_as_a_sentence_with_the_wait(
    swarm: LocalSwarmFixture, browser: Browser
) -> None:
    """On a swarm of its own: its echo node stops answering (SIGSTOP), so the gateway holds
    it as not responding."""
    swarm.start_gateway()
    swarm.start_node("echo", [swarm.addr("gateway")], ["echo"])
    swarm.wait_ready(["echo"])
    wait_tasks(swarm.url(), swarm.token(), {"echo": "text-generation"})
    problems: list[str] = []
    page = signed_in(browser, swarm.url(), "waiter", problems)
    node = swarm.local.procs["echo"].pid
    os.kill(node, signal.SIGSTOP)
    try:
        _refused_with_the_wait(swarm, page, problems)
    finally:
        os.kill(node, signal.SIGCONT)


def _refused_with_the_wait(swarm: LocalSwarmFixture, page: Page, problems: list[str]) -> None:
    token = {"Authorization": f"Bearer {swarm.token()}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # out of routing once it misses three updates
        peers = httpx.get(f"{swarm.url()}/v1/peers", headers=token).json()["data"]
        if not any(p["healthy"] for p in peers if p.get("role") != "gateway"):
            break
        time.sleep(0.2)
    page.get_by_label("Message", exact=True).fill("anyone there?")
    page.get_by_role("button", name="Send").click()
    error = page.locator("#chat-error")
    expect(error).to_contain_text("No node can answer now: no node can take 'echo' now")
    expect(error).to_contain_text(re.compile(r"Try again in [1-9][0-9]* s\.$"))
    # The page's wait is the gateway's estimate, sent as Retry-After.
    headers = {"Authorization": f"Bearer {session_token(page)}"}
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(f"{swarm.url()}/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_peer_ready"
    assert refused.headers["Retry-After"] == str(WAIT_AWAY)  # not responding, not busy
    # The browser logs the refusal the test provoked; nothing else.
    assert problems == ["Failed to load resource: the server responded with a status of 503 ()"]

"""The web dashboard in a real headless Chromium, against a real gateway and an echo node.

Screenshots of each step land in the test's tmp directory (``dashboard-*.png``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes

# Debian's Chromium wherever PATH finds it; under CI a missing browser fails the run
# (see conftest), it is never a quiet skip.
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"
EXPECTED_REFUSAL = "Failed to load resource: the server responded with a status of 4"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium on PATH (scripts/test installs Debian's chromium package)",
)


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Debian's Chromium, never a downloaded one.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def gateway_url(swarm: LocalSwarmFixture) -> str:
    gateway = swarm.start_gateway()
    swarm.start_node("node-0", [str(gateway["addrs"][0])], ["echo"])  # type: ignore[index]
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    return url


def open_page(browser: Browser, url: str, problems: list[str], *, audited: bool = False) -> Page:
    """``url`` in a new page whose console errors go to ``problems``. An ``audited`` page
    lets the accessibility audit inject axe-core past the page's script policy."""
    page = browser.new_page(
        viewport={"width": 1280, "height": 900}, color_scheme="light", bypass_csp=audited
    )

    def on_console(message: ConsoleMessage) -> None:
        # Refusals the test provokes are logged too; anything else (a script error, a
        # blocked resource) is a problem.
        if message.type == "error" and not message.text.startswith(EXPECTED_REFUSAL):
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    return page


def chat(url: str, key: str) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": "counted by usage"}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_register_see_the_swarm_and_manage_keys(
    swarm: LocalSwarmFixture, gateway_url: str, browser: Browser, tmp_path: Path
) -> None:
    url = gateway_url
    node_id = swarm.peer_id("node-0")
    problems: list[str] = []
    page = open_page(browser, url, problems)

    def shot(name: str) -> None:
        page.screenshot(path=tmp_path / f"dashboard-{name}.png", full_page=True)

    expect(page.get_by_role("heading", name="Sign in to the swarm")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_focused()
    shot("1-login")

    # A login before the account exists says so plainly.
    page.get_by_label("Username").fill("dash_user")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#login-error")).to_contain_text("at least 8 characters")
    shot("2-login-error")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Swarm")).to_be_visible()
    expect(page.locator("#account-name")).to_have_text("dash_user")

    # The swarm: the node with its model, healthy, and this gateway.
    node_row = page.locator(f'#peers tr[data-peer-id="{node_id}"]')
    expect(node_row).to_contain_text("echo")
    expect(node_row).to_contain_text("ready")
    expect(node_row).to_contain_text("healthy")
    # The echo node says what its memory is: RAM on a CPU host, VRAM on a GPU.
    expect(node_row).to_contain_text(re.compile(r"free of \S+ \S+ (RAM|VRAM|unified)"))
    expect(page.locator("#peers tbody tr")).to_have_count(2)
    expect(page.locator("#swarm-stats")).to_contain_text("1 / 1")
    shot("3-swarm")

    # A new key is shown once, and works.
    page.get_by_label("Key name").fill("ci-key")
    page.get_by_label("Expires after (days)").fill("7")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").inner_text()
    assert key.count(".") == 2, key
    key_row = page.locator("#keys-table tbody tr", has_text="ci-key")
    expect(key_row).to_contain_text("active")
    assert chat(url, key).status_code == 200

    # The call shows in the usage chart once the usage is read again.
    page.get_by_label("over").select_option("7")
    expect(page.locator("#usage-totals")).to_contain_text("Requests1")
    expect(page.locator("#usage-chart rect.bar")).to_have_count(2)
    shot("4-key-created")

    # Revoking asks first, then the key stops working at once.
    page.once("dialog", lambda dialog: dialog.accept())
    key_row.get_by_role("button", name="Revoke key ci-key").click()
    expect(key_row).to_contain_text("revoked")
    expect(page.locator("#notice")).to_contain_text("revoked")
    assert chat(url, key).status_code == 401
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#new-key")).to_be_hidden()
    shot("5-key-revoked")

    page.emulate_media(color_scheme="dark")
    shot("6-dark")
    # On a phone the page stays one column wide; wide tables scroll inside their box.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    shot("7-narrow")

    # Logging out forgets the token, and the gateway refuses it from then on (a copy of it
    # is worthless); logging in again brings the same account back.
    session = page.evaluate("JSON.parse(sessionStorage.getItem('bitinglip.session')).token")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Sign in to the swarm")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    me = httpx.get(f"{url}/v1/auth/me", headers={"Authorization": f"Bearer {session}"})
    assert me.status_code == 401 and "revoked" in me.json()["error"]["message"], me.text
    page.get_by_label("Username").fill("dash_user")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    expect(page.locator("#keys-table tbody tr", has_text="ci-key")).to_contain_text("revoked")

    assert problems == []

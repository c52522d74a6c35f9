"""The web app's operator views and account settings in a real headless Chromium, against a
real gateway and an echo node.

Screenshots of each step land in the test's tmp directory (``operator-*.png``).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

import keys
from gateway.accounts.users import create_user
from tests.integration import test_dashboard as dashboard
from tests.integration.axe import blocking
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_dashboard import PASSWORD, chat, open_page
from tests.integration.test_swarm import wait_nodes

browser = dashboard.browser  # the same Debian Chromium, launched the same way
pytestmark = dashboard.pytestmark

NEW_PASSWORD = "staple battery horse"
PLANS = "[gateway.plans.pro]\nrequests_per_minute = 600\ntokens_per_day = 1000000\n"


def start(swarm: LocalSwarmFixture, tmp_path: Path) -> str:
    """A gateway with a second plan, an echo node, and an admin who logs in with a password."""
    config = tmp_path / "gateway.toml"
    config.write_text(PLANS)
    gateway = swarm.start_gateway(config=config)
    swarm.start_node("node-0", [str(gateway["addrs"][0])], ["echo"])  # type: ignore[index]
    with swarm.accounts() as store:
        cost = keys.ScryptCost(2**14)
        create_user(store, "root", PASSWORD, "default", time.time(), admin=True, cost=cost)
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    return url


def sign_in(page: Page, user: str, password: str = PASSWORD) -> None:
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#account-name")).to_have_text(user)


def log_in(url: str, user: str, agent: str, password: str = PASSWORD) -> str:
    response = httpx.post(
        f"{url}/v1/auth/login",
        json={"username": user, "password": password},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def me(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_an_admin_manages_users_keys_and_sees_usage(
    swarm: LocalSwarmFixture, browser: Browser, tmp_path: Path
) -> None:
    url = start(swarm, tmp_path)
    problems: list[str] = []
    page = open_page(browser, url, problems, audited=True)

    def shot(name: str) -> None:
        page.screenshot(path=tmp_path / f"operator-{name}.png", full_page=True)

    sign_in(page, "root")
    expect(page.get_by_role("heading", name="Operator")).to_be_visible()
    plans = page.locator("#op-plans-list tbody tr")
    expect(plans).to_have_count(2)
    expect(plans.filter(has_text="pro")).to_contain_text("600")
    node = page.locator(f'#op-nodes-list tr[data-peer-id="{swarm.peer_id("node-0")}"]')
    expect(node).to_contain_text("echo · ready")
    expect(node.locator(".model-states")).to_have_text("1 ready")
    expect(node).to_contain_text(f"bitinglip node unload echo --peer {swarm.peer_id('node-0')}")

    # A new user, who then signs in, makes a key and uses it.
    page.get_by_label("New user's name").fill("carol")
    page.get_by_label("Their first password").fill(PASSWORD)
    page.get_by_role("button", name="Add user").click()
    carol_row = page.locator('#op-users-list tr[data-user="carol"]')
    expect(carol_row).to_contain_text("active")
    expect(page.get_by_label("New user's name")).to_have_value("")
    expect(page.get_by_role("button", name="Disable root")).to_have_count(0)
    carol = log_in(url, "carol", "Carol's laptop")
    made = httpx.post(
        f"{url}/v1/keys", json={"name": "laptop"}, headers={"Authorization": f"Bearer {carol}"}
    ).json()
    assert chat(url, made["key"]).status_code == 200
    shot("1-users")

    # Her plan changes at once.
    page.get_by_label("Plan of carol").select_option("pro")
    expect(page.locator("#notice")).to_contain_text("carol: now on plan pro")
    assert me(url, carol).json()["plan"]["name"] == "pro"

    # Her key, among everyone's, is revoked.
    page.get_by_role("button", name="Refresh").click()
    key_row = page.locator(f'#op-keys-list tr[data-key-id="{made["id"]}"]')
    expect(key_row).to_contain_text("active")
    page.once("dialog", lambda dialog: dialog.accept())
    key_row.get_by_role("button", name="Revoke carol's key laptop").click()
    expect(key_row).to_contain_text("revoked")
    assert chat(url, made["key"]).status_code == 401

    # Usage by user and by model: her one call on echo.
    by_user = page.locator('#op-usage-tables tr[data-name="carol"]')
    expect(by_user).to_contain_text("1")
    expect(page.locator('#op-usage-tables tr[data-name="echo"]')).to_be_visible()
    # The chart of tokens by model over time has today's bar, named in its legend.
    today = time.strftime("%Y-%m-%d", time.gmtime())
    expect(page.locator(f'#op-usage-chart g[data-date="{today}"] title')).to_contain_text("echo")
    expect(page.locator(f'#op-usage-chart g[data-date="{today}"] rect.bar.m0')).to_have_count(1)
    expect(page.locator("#op-usage-legend")).to_contain_text("echo")
    page.get_by_label("Period").select_option("7")
    expect(by_user).to_be_visible()
    shot("2-keys-usage")

    # Disabled: every token of hers is refused.
    carol_row.get_by_role("button", name="Disable carol").click()
    expect(carol_row).to_contain_text("disabled")
    assert "disabled" in me(url, carol).json()["error"]["message"]
    carol_row.get_by_role("button", name="Enable carol").click()
    expect(carol_row).to_contain_text("active")
    assert me(url, carol).status_code == 200
    shot("3-disabled")

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    assert blocking(page) == []  # the operator views too, at phone width
    assert problems == []


def test_a_user_changes_password_ends_a_session_and_deletes_the_account(
    swarm: LocalSwarmFixture, browser: Browser, tmp_path: Path
) -> None:
    url = start(swarm, tmp_path)
    registered = httpx.post(
        f"{url}/v1/auth/register",
        json={"username": "dave", "password": PASSWORD},
        headers={"User-Agent": "Dave's phone"},
    )
    phone = registered.json()["token"]
    tablet = log_in(url, "dave", "Dave's tablet")
    problems: list[str] = []
    page = open_page(browser, url, problems)

    def shot(name: str) -> None:
        page.screenshot(path=tmp_path / f"settings-{name}.png", full_page=True)

    sign_in(page, "dave")
    expect(page.locator("#operator")).to_have_count(0)  # not an admin
    sessions = page.locator("#sessions-list tbody tr")
    expect(sessions).to_have_count(3)
    expect(sessions.filter(has_text="this browser")).to_contain_text("Headless Chrome on Linux")
    shot("1-sessions")

    # One session ended: that token is refused at once.
    page.get_by_role("button", name="End the session of Dave's tablet").click()
    expect(sessions).to_have_count(2)
    assert "revoked" in me(url, tablet).json()["error"]["message"]

    # A wrong current password changes nothing; the right one ends the other sessions.
    page.get_by_label("Current password").fill("not the password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-error")).to_have_text("The current password is wrong.")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#notice")).to_contain_text("Password changed. 1 other session ended.")
    expect(sessions).to_have_count(1)
    assert "revoked" in me(url, phone).json()["error"]["message"]
    shot("2-password-changed")

    # Deleting asks for the password and a confirmation, then signs out for good.
    browser_token = page.evaluate("JSON.parse(sessionStorage.getItem('bitinglip.session')).token")
    page.get_by_label("Your password, to confirm").fill(NEW_PASSWORD)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("heading", name="Sign in to the swarm")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("Your account is deleted.")
    assert me(url, browser_token).status_code == 401
    gone = httpx.post(f"{url}/v1/auth/login", json={"username": "dave", "password": NEW_PASSWORD})
    assert gone.status_code == 401
    shot("3-deleted")
    assert problems == []

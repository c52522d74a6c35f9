"""docs/deploy.md, followed on three machines (network namespaces on one bridge): the operator
admits a gateway and two nodes with the guide's commands, the peers start from the guide's
config files with its fixed ports, one node through its bootstrap address and one with none
(mDNS), and a call goes through. The guide's systemd units pass ``systemd-analyze verify``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import keys
from gateway.accounts import Store, create_user, operator_token
from node.p2p.readiness import read_status
from tests.integration.netns import Lan, lan, unavailable
from tests.integration.test_openai_e2e import wait_models

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = ROOT / "docs" / "deploy"
BITINGLIP = [sys.executable, "-m", "node.cli"]
WHY = unavailable()


@pytest.fixture
def net() -> Iterator[Lan]:
    with lan() as made:
        yield made


def admit(operator: Path, peer_dir: Path, role: str) -> str:
    """The guide's admission: first start prints the peer id, the operator admits it,
    the certificate and public keys are copied over. Returns the peer id."""
    first = subprocess.run(
        [*BITINGLIP, role, "start", "--data-dir", str(peer_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 1, first.stderr
    found = re.search(r"keys admit (\S+) --role", first.stderr)
    assert found, first.stderr
    peer = found.group(1)
    subprocess.run(
        [*BITINGLIP, "keys", "admit", peer, "--role", role, "--data-dir", str(operator),
         "--out", str(peer_dir / "membership.cert")],
        check=True, timeout=60,
    )  # fmt: skip
    names = ["operator.pub", *(["jwt.key", "jwt.pub"] if role == "gateway" else [])]
    for name in names:
        shutil.copy(operator / name, peer_dir / name)
    return peer


def config(example: str, out: Path, **values: str) -> Path:
    """The guide's example config with this machine's values."""
    text = (GUIDE / example).read_text()
    for key, value in values.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    out.write_text(text)
    return out


def wait_ready(status: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while read_status(status).get("state") != "ready":
        assert proc.poll() is None, f"{status.stem} exited"
        assert time.monotonic() < deadline, f"{status.stem} not ready"
        time.sleep(0.2)


@pytest.mark.timeout(600)  # five peer processes start one after another
@pytest.mark.skipif(WHY is not None, reason=WHY or "")
def test_the_deploy_guide_on_three_machines(net: Lan, tmp_path: Path) -> None:
    operator, gw, wan_node, lan_node = (tmp_path / n for n in ("op", "gw", "node", "lan"))
    subprocess.run([*BITINGLIP, "keys", "init", "--data-dir", str(operator)], check=True)
    gateway_id = admit(operator, gw, "gateway")
    admit(operator, wan_node, "node")
    admit(operator, lan_node, "node")
    gateway_ip = net.add("gw")
    net.add("node")
    net.add("lan")
    procs: list[subprocess.Popen[bytes]] = []

    def start(machine: str, role: str, conf: Path) -> Path:
        status = tmp_path / f"{machine}.json"
        log = (tmp_path / f"{machine}.log").open("wb")
        command = [*BITINGLIP, role, "start", "--config", str(conf), "--ready-file", str(status)]
        procs.append(subprocess.Popen([*net.run_in(machine), *command], stdout=log, stderr=log))
        wait_ready(status, procs[-1])
        return status

    try:
        start("gw", "gateway", config("gateway.toml", tmp_path / "g.toml", data_dir=f'"{gw}"'))
        bootstrap = f'["/ip4/{gateway_ip}/tcp/4002/p2p/{gateway_id}"]'
        for machine, peer_dir, boot in (("node", wan_node, bootstrap), ("lan", lan_node, "[]")):
            start(
                machine,
                "node",
                config(
                    "node.toml", tmp_path / f"{machine}.toml", data_dir=f'"{peer_dir}"',
                    bootstrap=boot, models='["echo"]',
                ),
            )  # fmt: skip
        with Store.open(gw) as store:
            create_user(store, "alice", None, "default", time.time())
            signing = keys.jwt_keys(operator).private
            assert signing is not None
            token = operator_token(store, signing, "alice", 3600)
        url = f"http://{gateway_ip}:8080"
        wait_models(url, token, {"echo"})
        deadline = time.monotonic() + 60
        while True:  # both nodes are routed to: the one with no bootstrap was found by mDNS
            health = httpx.get(f"{url}/health").json()
            if health.get("nodes") == 2:
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=30)
        reply = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "deployed"}]
        )
        assert reply.choices[0].message.content == "deployed"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", ["bitinglip-node.service", "bitinglip-gateway.service"])
def test_the_guide_s_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    # Installed where this test runs, not in /opt: verify checks the command exists.
    bitinglip = Path(sys.executable).parent / "bitinglip"
    text = (GUIDE / unit).read_text().replace("/opt/bitinglip/.venv/bin/bitinglip", str(bitinglip))
    (tmp_path / unit).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

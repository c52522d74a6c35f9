"""README's "Running across machines", step by step, with one data directory for the
operator and another for a new node (two machines, as far as keys go), every step a
``bitinglip`` process: keys init; the node's first start prints its peer id and stops;
keys admit; the certificate and ``operator.pub`` copied over; the node's second start
joins the operator's swarm and serves a request through its gateway.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import keys
from node.p2p.readiness import read_status
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes

BITINGLIP = str(Path(sys.executable).with_name("bitinglip"))


def bitinglip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BITINGLIP, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[LocalSwarmFixture]:
    """The operator's machine: keys made by ``bitinglip keys init``, then a gateway."""
    op = tmp_path / "operator"
    made = bitinglip("keys", "init", "--data-dir", str(op))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"operator keys ready in {op}"
    for name in ("operator.key", "operator.pub", "jwt.key", "jwt.pub"):
        assert (op / name).is_file(), name
    public = (op / "operator.pub").read_bytes()
    swarm = LocalSwarmFixture(op)
    try:
        assert (op / "operator.pub").read_bytes() == public  # the keys init made, kept
        swarm.start_gateway()
        yield swarm
    finally:
        swarm.local.stop()


def start_node(node_dir: Path, bootstrap: str) -> subprocess.Popen[bytes]:
    command = [
        BITINGLIP, "node", "start", "--data-dir", str(node_dir), "--model", "echo",
        "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap,
        "--ready-file", str(node_dir / "status.json"),
    ]  # fmt: skip
    log = (node_dir / "node.log").open("ab")
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def wait_ready(proc: subprocess.Popen[bytes], status: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while read_status(status).get("state") != "ready":
        assert proc.poll() is None, f"the node stopped: {status.with_name('node.log').read_text()}"
        assert time.monotonic() < deadline, f"the node is not ready after {timeout:.0f} s"
        time.sleep(0.2)


def test_a_node_admitted_from_another_machine_serves_through_the_gateway(
    operator: LocalSwarmFixture, tmp_path: Path
) -> None:
    node_dir = tmp_path / "node"
    bootstrap = operator.addr("gateway")

    # First start: the node makes its identity, says who it is, and stops, not admitted.
    first = bitinglip(
        "node", "start", "--data-dir", str(node_dir), "--model", "echo",
        "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap,
    )  # fmt: skip
    assert first.returncode == 1, first.stderr
    assert (node_dir / "identity.key").is_file()
    assert not (node_dir / "membership.cert").exists()
    peer = keys.peer_id(node_dir)
    said = re.search(r"bitinglip keys admit (\S+) --role node", first.stderr)
    assert said is not None, first.stderr
    assert said.group(1) == peer
    assert first.stderr.startswith("error: no membership.cert in ")

    # On the operator's machine: a certificate for that peer id.
    cert = tmp_path / "membership.cert"
    admitted = bitinglip(
        "keys", "admit", peer, "--role", "node", "--out", str(cert),
        "--data-dir", str(operator.data_dir),
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr
    assert admitted.stdout.strip() == f"admitted {peer} as node: wrote {cert}"

    # Copied to the node's machine, with the operator's public key.
    shutil.copy(cert, node_dir / "membership.cert")
    shutil.copy(operator.data_dir / "operator.pub", node_dir / "operator.pub")

    proc = start_node(node_dir, bootstrap)
    try:
        wait_ready(proc, node_dir / "status.json")
        assert read_status(node_dir / "status.json")["peer_id"] == peer  # the same identity
        url, token = operator.url(), operator.token()
        wait_nodes(url, 1)
        body = {"model": "echo", "messages": [{"role": "user", "content": "across machines"}]}
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "across machines"
        assert reply.headers["x-bitinglip-node"] == peer
    finally:
        proc.kill()
        proc.wait()

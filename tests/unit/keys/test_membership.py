"""Certificates live a day and are renewed where the operator key is at hand; a running
peer takes up a renewed one; the operator's revocation list grows with a signed seq."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import keys
from keys import keyring as ks
from node.cli.up import LocalSwarm
from protocols import read_certificate, verify_revocations

DAY = 24 * 3600.0


class Clock:
    """Stands in for ``time`` in ``keys.keyring``: now is whatever the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.time()
        monkeypatch.setattr(ks, "time", SimpleNamespace(time=lambda: self.now))


def cert_of(peer_dir: Path) -> tuple[float, float]:
    cert = read_certificate(
        (peer_dir / ks.CERTIFICATE).read_bytes(), keys.operator_public(peer_dir)
    )
    return cert.issued_at, cert.expires_at


def test_certificates_live_a_day_by_default(tmp_path: Path) -> None:
    keys.provision(tmp_path / "peer", tmp_path, "node")
    issued, expires = cert_of(tmp_path / "peer")
    assert expires - issued == DAY


def test_renewal_is_due_past_half_a_life_and_never_for_another_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    peer_dir = tmp_path / "peer"
    assert keys.renewal_due(peer_dir, "node", clock.now)  # nothing there yet
    keys.provision(peer_dir, tmp_path, "node")
    assert not keys.renewal_due(peer_dir, "node", clock.now + DAY / 2 - 1)
    assert keys.renewal_due(peer_dir, "node", clock.now + DAY / 2)
    assert keys.renewal_due(peer_dir, "node", clock.now + 2 * DAY)
    assert not keys.renewal_due(peer_dir, "gateway", clock.now + 2 * DAY)
    (peer_dir / ks.CERTIFICATE).write_bytes(b"garbage")
    assert keys.renewal_due(peer_dir, "node", clock.now)


def test_ensure_admitted_renews_only_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    peer_dir = tmp_path / "peer"
    peer = keys.ensure_admitted(peer_dir, tmp_path, "client")
    first = cert_of(peer_dir)
    clock.now += DAY / 4
    assert keys.ensure_admitted(peer_dir, tmp_path, "client") == peer
    assert cert_of(peer_dir) == first
    clock.now += DAY / 4
    keys.ensure_admitted(peer_dir, tmp_path, "client")
    assert cert_of(peer_dir)[0] == clock.now


def test_a_peer_holding_the_operator_key_renews_its_own_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    keys.init_operator(tmp_path)
    membership = keys.Membership.load(tmp_path, "node")
    assert not membership.refresh()
    clock.now += DAY * 0.75
    assert membership.refresh()
    assert read_certificate(membership.certificate, keys.operator_public(tmp_path)).expires_at == (
        clock.now + DAY
    )


def test_a_running_peer_takes_up_a_certificate_written_into_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    peer_dir = tmp_path / "peer"
    keys.provision(peer_dir, tmp_path, "node")
    membership = keys.Membership.load(peer_dir, "node")
    before = membership.certificate
    clock.now += 60
    # The operator admits it again (`bitinglip keys admit`, or `bitinglip up`), here.
    keys.write_certificate(peer_dir, keys.admit(tmp_path, keys.peer_id(peer_dir), "node"))
    assert membership.refresh() and membership.certificate != before
    # One for another peer or role is not taken up.
    renewed = membership.certificate
    keys.write_certificate(peer_dir, keys.admit(tmp_path, "someone-else", "node"))
    assert not membership.refresh()
    keys.write_certificate(peer_dir, keys.admit(tmp_path, keys.peer_id(peer_dir), "gateway"))
    assert not membership.refresh()
    assert membership.certificate == renewed


def test_a_fixed_membership_never_changes() -> None:
    membership = keys.Membership(b"cert")
    assert not membership.refresh()
    assert membership.certificate == b"cert"


def test_bitinglip_up_renews_its_peers_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    swarm = LocalSwarm(tmp_path)
    peer_dir = tmp_path / "peers" / "node-0"
    keys.provision(peer_dir, tmp_path, "node")
    swarm.roles[peer_dir] = "node"
    first = cert_of(peer_dir)
    swarm.renew()
    assert cert_of(peer_dir) == first
    clock.now += DAY * 0.6
    swarm.renew()
    assert cert_of(peer_dir) == (clock.now, clock.now + DAY)


def test_revoking_grows_a_signed_list_that_new_peers_are_given(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    first = verify_revocations(keys.revoke(tmp_path, "peer-a"), keys.operator_public(tmp_path))
    second = verify_revocations(keys.revoke(tmp_path, "peer-b"), keys.operator_public(tmp_path))
    assert (first.seq, set(first.peers)) == (1, {"peer-a"})
    assert (second.seq, set(second.peers)) == (2, {"peer-a", "peer-b"})
    assert second.peers["peer-a"] == first.peers["peer-a"]
    assert keys.revocations(tmp_path, keys.operator_public(tmp_path)) == second
    keys.provision(tmp_path / "peer", tmp_path, "node")
    assert (tmp_path / "peer" / ks.REVOKED).read_bytes() == (tmp_path / ks.REVOKED).read_bytes()


def test_only_the_operator_revokes(tmp_path: Path) -> None:
    keys.provision(tmp_path / "peer", tmp_path, "node")
    with pytest.raises(keys.NotAdmitted, match="operator"):
        keys.revoke(tmp_path / "peer", "peer-a")

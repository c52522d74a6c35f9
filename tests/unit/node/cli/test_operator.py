"""``bitinglip keys admit --ttl`` and ``keys revoke`` without a swarm to tell."""

from __future__ import annotations

from pathlib import Path

import pytest

import keys
from node.cli.main import main
from protocols import read_certificate, verify_revocations


def test_admit_issues_a_certificate_for_the_time_asked(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    out = tmp_path / "peer.cert"
    assert (
        main(
            [
                "keys",
                "admit",
                "peer-a",
                "--ttl",
                "2h",
                "--out",
                str(out),
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    cert = read_certificate(out.read_bytes(), keys.operator_public(tmp_path))
    assert (cert.peer_id, cert.expires_at - cert.issued_at) == ("peer-a", 7200)
    assert (
        main(
            [
                "keys",
                "admit",
                "peer-a",
                "--ttl",
                "soon",
                "--out",
                str(out),
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 2
    )


def test_revoke_without_a_swarm_keeps_the_list_for_peers_to_be_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys.init_operator(tmp_path)
    assert main(["keys", "revoke", "peer-a", "--data-dir", str(tmp_path)]) == 0
    said = capsys.readouterr()
    assert "revoked peer-a" in said.out and "no swarm to tell" in said.err
    revoked = keys.revocations(tmp_path, keys.operator_public(tmp_path))
    assert revoked is not None and "peer-a" in revoked
    blob = (tmp_path / "revoked.list").read_bytes()
    assert verify_revocations(blob, keys.operator_public(tmp_path)).seq == 1

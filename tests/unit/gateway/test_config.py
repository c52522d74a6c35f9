"""A gateway's routing policy comes from ``[gateway]``, its environment variable or the default,
and a name it does not know is refused with the ones it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from node.p2p.config import load


def test_routing_is_expected_wait_unless_set(tmp_path: Path) -> None:
    assert load(GatewayConfig, "gateway", {}, None).routing == "expected-wait"
    file = tmp_path / "gateway.toml"
    file.write_text('[gateway]\nrouting = "round-robin"\n')
    assert load(GatewayConfig, "gateway", {}, file).routing == "round-robin"


def test_routing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITINGLIP_GATEWAY_ROUTING", "random")
    assert load(GatewayConfig, "gateway", {}, None).routing == "random"


def test_an_unknown_routing_policy_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('[gateway]\nrouting = "fastest"\n')
    with pytest.raises(
        ValueError,
        match=r"routing must be one of expected-wait, round-robin, "
        r"random, not 'fastest'",
    ):
        load(GatewayConfig, "gateway", {}, file)

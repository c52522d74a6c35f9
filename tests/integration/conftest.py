"""Real peer processes on 127.0.0.1, cleaned up whatever happens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keys
from gateway.accounts import Store, create_user, operator_token
from node.cli.up import LocalSwarm

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder starts processes or servers: mark it so (``-m "not
    integration"`` runs the in-process suite alone)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


class LocalSwarmFixture:
    """A local swarm started by a test: a gateway and named nodes."""

    def __init__(self, data_dir: Path) -> None:
        self.local = LocalSwarm(data_dir)
        self.data_dir = data_dir
        self.databases: dict[str, Path] = {}  # gateways started with a database_dir
        keys.init_operator(data_dir)

    def start_gateway(
        self,
        name: str = "gateway",
        bootstrap: list[str] | None = None,
        *,
        registration: str = "open",
        env: dict[str, str] | None = None,
        config: Path | None = None,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        wrap: list[str] | None = None,
    ) -> dict[str, object]:
        """A gateway as ``bitinglip up`` starts one (registration open), hashing passwords
        at the lowest cost it allows, so tests that register stay fast."""
        extra = ["--port", "0", "--registration", registration]
        extra += [x for b in bootstrap or [] for x in ("--bootstrap", b)]
        extra += ["--config", str(config)] if config else []
        env = {"BITINGLIP_GATEWAY_SCRYPT_N": str(2**14)} | (env or {})
        if "BITINGLIP_GATEWAY_DATABASE_DIR" in env:
            self.databases[name] = Path(env["BITINGLIP_GATEWAY_DATABASE_DIR"])
        self.local.spawn(name, "gateway", extra, env, listen=listen, wrap=wrap)
        self.local.wait([name], "ready", 60)
        return self.local.status(name)

    def start_node(
        self,
        name: str,
        bootstrap: list[str],
        models: list[str],
        extra: list[str] | None = None,
        *,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        wrap: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        args = [x for b in bootstrap for x in ("--bootstrap", b)]
        args += [x for m in models for x in ("--model", m)]
        args += ["--model-store", str(self.data_dir), *(extra or [])]
        self.local.spawn(name, "node", args, env, listen=listen, wrap=wrap)

    def wait_ready(self, names: list[str], timeout: float = 120) -> None:
        self.local.wait(names, "ready", timeout)

    def addr(self, name: str) -> str:
        addrs = self.local.status(name)["addrs"]
        assert isinstance(addrs, list)
        return str(addrs[0])

    def peer_id(self, name: str) -> str:
        return str(self.local.status(name)["peer_id"])

    def url(self, name: str = "gateway") -> str:
        return str(self.local.status(name)["url"])

    def accounts(self, gateway: str = "gateway") -> Store:
        """The database of ``gateway``'s users (its data dir's, unless configured elsewhere)."""
        return Store.open(self.databases.get(gateway, self.data_dir / "peers" / gateway))

    def token(
        self,
        user: str = "tester",
        ttl: float = 3600,
        scope: str = "inference",
        gateway: str = "gateway",
    ) -> str:
        """A token for ``user`` on ``gateway``, as the operator issues one: the user is added
        to its table first if need be (an admin, for an admin token)."""
        signing = keys.jwt_keys(self.data_dir).private
        assert signing is not None
        with self.accounts(gateway) as store:
            if store.user(user) is None:
                create_user(store, user, None, "default", time.time())
            if scope == "admin":
                store.set_admin(user, True)
            return operator_token(store, signing, user, ttl, scope)

    def kill(self, name: str) -> None:
        proc = self.local.procs[name]
        proc.kill()
        proc.wait()


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[LocalSwarmFixture]:
    s = LocalSwarmFixture(tmp_path / "swarm")
    try:
        yield s
    finally:
        s.local.stop()

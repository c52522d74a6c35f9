"""The gateway's SQLite store, password hashing, and the operator's ``users``/``tokens`` CLI.

Real database files in temp dirs; the CLI runs in-process through ``node.cli.main``.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import keys
from gateway.accounts.database import (
    FILENAME,
    USAGE_GROUPS,
    DayTotal,
    KeyRecord,
    SchemaTooNew,
    Store,
    UsageRecord,
    UserExists,
)
from gateway.accounts.database.schema import MIGRATIONS
from gateway.accounts.tokens import audience_of
from node.cli.admin import gateway_dir
from node.cli.main import main

# --- the database file --------------------------------------------------------------------


def test_new_database_is_private_wal_and_versioned(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        assert stat.S_IMODE((tmp_path / FILENAME).stat().st_mode) == 0o600
        assert store._read("PRAGMA synchronous")[0][0] == 1  # NORMAL: survives a killed process
        assert store._read("PRAGMA foreign_keys")[0][0] == 1
    raw = sqlite3.connect(tmp_path / FILENAME)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    raw.close()


def test_each_database_names_itself_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a") as a, Store.open(tmp_path / "b") as b:
        first = a.accounts_id()
        assert len(first) == 32 and first != b.accounts_id()
    with Store.open(tmp_path / "a") as again:
        assert again.accounts_id() == first


def test_a_first_version_file_is_upgraded_in_place(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / FILENAME)
    raw.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    raw.execute("INSERT INTO users VALUES ('alice', NULL, 'default', 0, 1.0)")
    raw.commit()
    raw.close()
    with Store.open(tmp_path) as store:
        alice = store.user("alice")
        assert alice is not None and (alice.admin, alice.plan) == (False, "default")
        assert len(store.accounts_id()) == 32


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_user("alice", None, "default", 1.0)
    with Store.open(tmp_path) as store:
        assert [u.name for u in store.users()] == ["alice"]


def test_a_new_file_opened_from_many_places_at_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Store.open(tmp_path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    raw = sqlite3.connect(tmp_path / FILENAME)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(SchemaTooNew, match="99"):
        Store.open(tmp_path)


def test_users(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        alice = store.add_user("Alice", "scrypt$hash", "pro", 5.0)
        assert store.user("ALICE") == alice
        assert (alice.name, alice.plan, alice.disabled) == ("Alice", "pro", False)
        with pytest.raises(UserExists):
            store.add_user("alice", None, "default", 6.0)
        with pytest.raises(ValueError, match="username"):
            store.add_user("no spaces", None, "default", 6.0)
        assert store.set_disabled("alice", True)
        assert store.set_plan("alice", "free")
        found = store.user("alice")
        assert found is not None and (found.disabled, found.plan) == (True, "free")
        assert not store.set_disabled("nobody", True)
        assert not store.set_plan("nobody", "free")
        assert store.user("nobody") is None


def test_keys_and_revocations(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_user("alice", None, "default", 1.0)
        key = KeyRecord("k1", "alice", "laptop", 2.0, 1000.0, None)
        store.add_key(key)
        assert store.keys("ALICE") == [key] == store.keys()
        assert store.key("k1") == key
        with pytest.raises(sqlite3.IntegrityError):  # keys belong to users that exist
            store.add_key(KeyRecord("k2", "ghost", "x", 2.0, 1000.0, None))
        store.revoke("k1", 1000.0, 50.0)
        store.revoke("k1", 1000.0, 60.0)  # again: the first time stands
        store.revoke("operator-token", None, 70.0)
        assert store.key("k1") == KeyRecord("k1", "alice", "laptop", 2.0, 1000.0, 50.0)
        assert store.revocations(100.0) == {"k1": 1000.0, "operator-token": None}
        # Once a token has expired it cannot verify anyway: its revocation goes.
        assert store.revocations(2000.0) == {"operator-token": None}


def _usage(
    day: str, user: str, model: str, tokens: int, images: int = 0, audio: int = 0
) -> UsageRecord:
    return UsageRecord(1.0, day, user, "k", model, "peer", "chat", tokens, 1, images, 200, 3, audio)


def test_usage_sums(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_usage(
            [
                _usage("2026-01-01", "alice", "echo", 10),
                _usage("2026-01-02", "alice", "echo", 10),
                _usage("2026-01-02", "Alice", "echo", 5, images=1),
                _usage("2026-01-02", "bob", "sd", 0, images=4),
                _usage("2026-01-02", "bob", "tts", 0, audio=7),
            ]
        )
        totals = store.usage("2026-01-02")
        assert [(t.day, t.user.lower(), t.model, t.requests) for t in totals] == [
            ("2026-01-02", "alice", "echo", 2),
            ("2026-01-02", "bob", "sd", 1),
            ("2026-01-02", "bob", "tts", 1),
        ]
        assert totals[2].audio_seconds == 7
        assert (totals[0].prompt_tokens, totals[0].completion_tokens, totals[0].images) == (
            15,
            2,
            1,
        )
        assert [t.day for t in store.usage("2000-01-01", "alice")] == ["2026-01-02", "2026-01-01"]
        totals_by_user = {u.lower(): v for u, v in store.day_totals("2026-01-02").items()}
        assert totals_by_user == {"alice": DayTotal(17, 1, 0), "bob": DayTotal(2, 4, 7)}
        assert [r.audio_seconds for r in store.usage_records("bob")] == [0, 7]


def test_usage_summed_by_groups_from_the_index_alone(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_usage(
            [
                _usage("2026-01-01", "alice", "echo", 10),
                _usage("2026-01-02", "alice", "echo", 10),
                _usage("2026-01-02", "alice", "sd", 0, images=2),
                _usage("2026-01-02", "bob", "echo", 30),
            ]
        )
        sums = {s.key: s.requests for s in store.usage_by("2026-01-01", "date,model")}
        assert sums == {
            ("2026-01-01", "echo"): 1,
            ("2026-01-02", "echo"): 2,
            ("2026-01-02", "sd"): 1,
        }
        alice = store.usage_by("2026-01-02", "model", "ALICE")
        assert [(s.key, s.requests, s.images) for s in alice] == [
            (("echo",), 1, 0),
            (("sd",), 1, 2),
        ]
        assert [s.key for s in store.usage_by("2026-01-01", "model")] == [("echo",), ("sd",)]
        # Every sum reads a covering index: no row of the table is visited.
        for group in USAGE_GROUPS:
            names = ", ".join(USAGE_GROUPS[group])
            for where in ("day >= 'x'", "day >= 'x' AND user = 'y'"):
                plan = store._read(
                    f"EXPLAIN QUERY PLAN SELECT {names}, COUNT(*), SUM(prompt_tokens),"
                    " SUM(completion_tokens), SUM(images), SUM(audio_seconds)"
                    f" FROM usage WHERE {where} GROUP BY {names}"
                )
                assert "COVERING INDEX" in plan[0][3], (group, where, plan)


def test_safe_from_many_threads(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:

        def write(n: int) -> None:
            for i in range(20):
                store.add_usage([_usage("2026-01-01", f"user-{n}", "echo", i)])

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.usage_records()) == 80


async def test_call_runs_off_the_event_loop(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        here = threading.get_ident()
        assert await store.call(threading.get_ident) != here
        user = await store.call(store.add_user, "alice", None, "default", now=1.0)
        assert await store.call(store.user, "alice") == user


# --- passwords ----------------------------------------------------------------------------


def test_password_hash_round_trip() -> None:
    hashed = keys.hash_password("correct horse", keys.ScryptCost(2**14))
    scheme, n, r, p, salt, digest = hashed.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert (len(base64.b64decode(salt)), len(base64.b64decode(digest))) == (16, 32)
    assert "correct horse" not in hashed
    assert keys.verify_password("correct horse", hashed)
    assert not keys.verify_password("correct horsE", hashed)
    assert not keys.verify_password("", hashed)
    assert keys.hash_password("correct horse", keys.ScryptCost(2**14)) != hashed  # fresh salt


@pytest.mark.parametrize("encoded", [None, "", "plain", "md5$1$2$3$4$5", "scrypt$x$8$1$AA==$AA=="])
def test_no_or_broken_hash_matches_nothing(encoded: str | None) -> None:
    assert not keys.verify_password("anything at all", encoded)


@pytest.mark.parametrize("password", ["", "seven77", "x" * 1025])
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(keys.WeakPassword):
        keys.hash_password(password)


# --- the operator's CLI -------------------------------------------------------------------


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``bitinglip ARGV`` with ``stdin``; its exit code, stdout and stderr."""

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_users_add_list_disable_and_plans(tmp_path: Path, cli: Cli) -> None:
    data = ["--data-dir", str(tmp_path)]
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway.plans.pro]\nrequests_per_minute = 600\n")
    code, out, _ = cli("users", "add", "alice", "--password-stdin", *data, stdin="long password\n")
    assert code == 0 and "alice" in out and "can log in" in out
    assert cli("users", "add", "bob", "--plan", "pro", "--config", str(config), *data)[0] == 0
    code, _, err = cli("users", "add", "carol", "--plan", "gold", *data)
    assert code == 1 and "no plan 'gold'" in err
    code, _, err = cli("users", "add", "alice", *data)
    assert code == 1 and "already exists" in err
    code, _, err = cli("users", "add", "dave", "--password-stdin", *data, stdin="short\n")
    assert code == 1 and "at least 8" in err

    assert cli("users", "disable", "bob", *data)[0] == 0
    assert cli("users", "set-plan", "alice", "pro", "--config", str(config), *data)[0] == 0
    assert cli("users", "set-plan", "ghost", "pro", "--config", str(config), *data)[0] == 2
    code, out, _ = cli("users", "list", "--json", *data)
    listed = {u["name"]: u for u in json.loads(out)}
    assert (listed["alice"]["plan"], listed["alice"]["password"]) == ("pro", True)
    assert (listed["bob"]["plan"], listed["bob"]["disabled"]) == ("pro", True)
    assert listed["bob"]["password"] is False

    with Store.open(tmp_path) as store:
        alice = store.user("alice")
        assert alice is not None and keys.verify_password("long password", alice.password)
    code, out, _ = cli("users", "list", *data)
    assert code == 0 and "alice" in out and "disabled" in out


def test_tokens_list_and_revoke(tmp_path: Path, cli: Cli) -> None:
    data = ["--data-dir", str(tmp_path)]
    keys.init_operator(tmp_path)
    with Store.open(tmp_path) as store:
        store.add_user("alice", None, "default", 1.0)
        store.add_key(KeyRecord("key-1", "alice", "laptop", 1.0, time.time() + 100, None))
    code, out, _ = cli("tokens", "list", "--user", "ALICE", "--json", *data)
    assert [k["id"] for k in json.loads(out)] == ["key-1"]
    assert cli("tokens", "list", "--user", "ghost", *data)[0] == 2

    code, out, _ = cli("tokens", "revoke", "key-1", *data)
    assert code == 0 and "laptop" in out
    # A whole token works too: its id and expiry come from its claims.
    token = keys.issue(keys.jwt_keys(tmp_path).private, "ops", 600)  # type: ignore[arg-type]
    claims = keys.verify(token, keys.jwt_keys(tmp_path).public)
    assert cli("tokens", "revoke", token, *data)[0] == 0
    code, _, err = cli("tokens", "revoke", "a.b.c", *data)
    assert code == 1 and "not a token" in err

    code, out, _ = cli("tokens", "list", *data)
    assert "revoked" in out
    with Store.open(tmp_path) as store:
        assert store.revocations(time.time()) == {
            "key-1": pytest.approx(time.time() + 100, abs=5),
            claims.jti: claims.exp,
        }


def test_tokens_issue_with_a_scope(tmp_path: Path, cli: Cli) -> None:
    keys.init_operator(tmp_path)
    data = ["--data-dir", str(tmp_path)]
    issue = ["tokens", "issue", "--user", "root", "--scope", "admin", *data]
    assert cli("users", "add", "root", *data)[0] == 0
    code, _, err = cli(*issue)
    assert code == 1 and "root is not an admin here: run `bitinglip users admin root`" in err
    assert cli("users", "admin", "root", *data)[1].strip() == "user root is now an admin"
    code, out, _ = cli(*issue)
    assert code == 0
    with Store.open(tmp_path) as store:
        audience = audience_of(store)
    assert keys.verify(out.strip(), keys.jwt_keyset(tmp_path), audience=audience).scope == "admin"


def test_data_dir_may_be_the_one_up_makes(tmp_path: Path) -> None:
    assert gateway_dir(tmp_path) == tmp_path
    (tmp_path / "peers" / "gateway").mkdir(parents=True)
    assert gateway_dir(tmp_path) == tmp_path / "peers" / "gateway"
    assert gateway_dir(tmp_path / "peers" / "gateway") == tmp_path / "peers" / "gateway"
    Store.open(tmp_path).close()  # a gateway that runs here itself wins
    assert gateway_dir(tmp_path) == tmp_path

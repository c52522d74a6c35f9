"""User passwords: strength rules at their edges, the stored hash format, and hashes that
must never match."""

from __future__ import annotations

import base64
import hashlib

import pytest

from keys.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    OWASP,
    ScryptCost,
    WeakPassword,
    check_strength,
    hash_password,
    needs_rehash,
    verify_password,
)

GOOD = "correct horse"
CHEAP = ScryptCost(2**14)  # the cost before OWASP's guidance was followed: fast for tests


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(GOOD, CHEAP)


def test_length_limits_are_eight_and_1024() -> None:
    assert (MIN_LENGTH, MAX_LENGTH) == (8, 1024)
    check_strength("x" * 8)
    check_strength("x" * 1024)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("x" * 7, "password must be at least 8 characters"),
        ("", "password must be at least 8 characters"),
        ("x" * 1025, "password must be at most 1024 characters"),
    ],
)
def test_weak_passwords_are_refused_with_the_rule(password: str, message: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        hash_password(password)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_the_default_cost_is_owasps_guidance() -> None:
    assert (OWASP.n, OWASP.r, OWASP.p) == (2**17, 8, 1)
    assert ScryptCost() == OWASP


def test_a_new_hash_uses_owasps_cost_and_an_old_one_still_verifies(stored: str) -> None:
    new = hash_password(GOOD)  # one real hash at the full cost (~0.4 s here)
    assert new.split("$")[:4] == ["scrypt", str(2**17), "8", "1"]
    assert verify_password(GOOD, new) is True
    # A hash made at the old cost carries its parameters and verifies as made...
    assert stored.split("$")[1] == str(2**14)
    assert verify_password(GOOD, stored) is True
    # ... and is the one to make again at the next login.
    assert needs_rehash(stored) is True
    assert needs_rehash(new) is False
    assert needs_rehash(None) is True
    assert needs_rehash(stored, CHEAP) is False


def test_costs_scrypt_cannot_take_or_that_would_take_the_host_are_refused() -> None:
    for n, r, p in ((3, 8, 1), (0, 8, 1), (2**21, 8, 1), (2**14, 0, 1), (2**14, 8, 17)):
        with pytest.raises(ValueError):
            ScryptCost(n, r, p)


def test_a_stored_hash_asking_for_too_much_memory_matches_nothing(stored: str) -> None:
    greedy = _with(stored, 1, str(2**24))
    assert verify_password(GOOD, greedy, CHEAP) is False


def test_the_hash_records_its_scheme_costs_salt_and_digest(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(digest, validate=True)) == 32


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password(GOOD, CHEAP).split("$")[4] != hash_password(GOOD, CHEAP).split("$")[4]


def test_the_password_matches_its_hash_and_nothing_else_does(stored: str) -> None:
    assert verify_password(GOOD, stored) is True
    assert verify_password(GOOD + " ", stored) is False
    assert verify_password("Correct horse", stored) is False


def test_no_hash_matches_nothing() -> None:
    assert verify_password(GOOD, None, CHEAP) is False
    assert verify_password(GOOD, "", CHEAP) is False


def _with(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


def test_malformed_hashes_match_nothing(stored: str) -> None:
    assert verify_password(GOOD, _with(stored, 0, "bcrypt"), CHEAP) is False
    assert verify_password(GOOD, _with(stored, 1, "many"), CHEAP) is False
    assert verify_password(GOOD, stored + "$extra", CHEAP) is False
    assert verify_password(GOOD, stored.rsplit("$", 1)[0], CHEAP) is False


def test_hashes_with_characters_outside_base64_match_nothing(stored: str) -> None:
    digest, salt = stored.split("$")[5], stored.split("$")[4]
    assert verify_password(GOOD, _with(stored, 5, "!" + digest), CHEAP) is False
    assert verify_password(GOOD, _with(stored, 4, salt + "!"), CHEAP) is False


def test_a_password_over_the_limit_never_matches_even_its_own_hash(stored: str) -> None:
    long = "y" * (MAX_LENGTH + 1)
    salt = stored.split("$")[4]
    digest = hashlib.scrypt(
        long.encode(), salt=base64.b64decode(salt), n=16384, r=8, p=1, maxmem=64 << 20, dklen=32
    )
    forged = _with(stored, 5, base64.b64encode(digest).decode())
    assert verify_password(long, forged) is False
    at_limit = "z" * MAX_LENGTH
    digest = hashlib.scrypt(
        at_limit.encode(), salt=base64.b64decode(salt), n=16384, r=8, p=1, maxmem=64 << 20, dklen=32
    )
    assert verify_password(at_limit, _with(stored, 5, base64.b64encode(digest).decode())) is True


def test_costs_are_read_from_the_hash(stored: str) -> None:
    salt = base64.b64decode(stored.split("$")[4])
    digest = hashlib.scrypt(GOOD.encode(), salt=salt, n=1024, r=2, p=1, dklen=32)
    cheap = "$".join(
        ["scrypt", "1024", "2", "1", stored.split("$")[4], base64.b64encode(digest).decode()]
    )
    assert verify_password(GOOD, cheap) is True


def test_a_hash_made_at_twice_the_memory_cost_still_verifies(stored: str) -> None:
    # Costs may be raised later: n = 2**15 needs more than scrypt's default 32 MiB.
    salt = base64.b64decode(stored.split("$")[4])
    digest = hashlib.scrypt(GOOD.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32)
    raised = "$".join(
        ["scrypt", str(2**15), "8", "1", stored.split("$")[4], base64.b64encode(digest).decode()]
    )
    assert verify_password(GOOD, raised) is True

"""User passwords: strength rules at their edges, the stored hash format, and hashes that
must never match."""

from __future__ import annotations

import base64
import hashlib

import pytest

from keys.passwords import (
    MAX_LENGTH,
    MIN_LENGTH,
    WeakPassword,
    check_strength,
    hash_password,
    verify_password,
)

GOOD = "correct horse"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(GOOD)


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


def test_the_hash_records_its_scheme_costs_salt_and_digest(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(digest, validate=True)) == 32


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password(GOOD).split("$")[4] != hash_password(GOOD).split("$")[4]


def test_the_password_matches_its_hash_and_nothing_else_does(stored: str) -> None:
    assert verify_password(GOOD, stored) is True
    assert verify_password(GOOD + " ", stored) is False
    assert verify_password("Correct horse", stored) is False


def test_no_hash_matches_nothing() -> None:
    assert verify_password(GOOD, None) is False
    assert verify_password(GOOD, "") is False


def _with(stored: str, index: int, value: str) -> str:
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


def test_malformed_hashes_match_nothing(stored: str) -> None:
    assert verify_password(GOOD, _with(stored, 0, "bcrypt")) is False
    assert verify_password(GOOD, _with(stored, 1, "many")) is False
    assert verify_password(GOOD, stored + "$extra") is False
    assert verify_password(GOOD, stored.rsplit("$", 1)[0]) is False


def test_hashes_with_characters_outside_base64_match_nothing(stored: str) -> None:
    digest, salt = stored.split("$")[5], stored.split("$")[4]
    assert verify_password(GOOD, _with(stored, 5, "!" + digest)) is False
    assert verify_password(GOOD, _with(stored, 4, salt + "!")) is False


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

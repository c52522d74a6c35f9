"""User tokens: the claims a token carries, the exact refusal messages, the expiry leeway
and duration parsing."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    KeySet,
    TokenError,
    describe_ttl,
    fingerprint,
    issue,
    parse_ttl,
    verify,
)

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ann", "iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER, "jti": "j"}
    return base | changes


def refusal(token: str, key: Any = PUBLIC) -> str:
    with pytest.raises(TokenError) as caught:
        verify(token, key)
    return str(caught.value)


def test_an_issued_token_carries_its_claims_and_names_its_key() -> None:
    before = int(time.time())
    token = issue(KEY, "ann", 90.9, jti="id-1")
    body = jwt.decode(token, options={"verify_signature": False})
    after = int(time.time())
    assert before <= body["iat"] <= after
    assert body["nbf"] == body["iat"]
    assert body["exp"] == body["iat"] + 90
    assert {k: body[k] for k in ("sub", "aud", "iss", "jti", "scope")} == {
        "sub": "ann",
        "aud": "bitinglip",
        "iss": "bitinglip-operator",
        "jti": "id-1",
        "scope": "inference",
    }
    assert jwt.get_unverified_header(token) == {
        "alg": "EdDSA",
        "typ": "JWT",
        "kid": fingerprint(KEY),
    }


def test_the_default_scope_is_inference() -> None:
    assert verify(issue(KEY, "ann", 60), PUBLIC).scope == "inference"


def test_verified_claims() -> None:
    token = jwt.encode(claims(scope="admin", sub="bob", jti="x1"), KEY, algorithm=ALGORITHM)
    verified = verify(token, PUBLIC)
    assert (verified.sub, verified.jti, verified.scope) == ("bob", "x1", "admin")
    assert verified.exp == float(jwt.decode(token, options={"verify_signature": False})["exp"])


def test_refusal_messages() -> None:
    expired = jwt.encode(claims(exp=int(time.time()) - 60), KEY, algorithm=ALGORITHM)
    assert refusal(expired) == "token has expired"
    elsewhere = jwt.encode(claims(aud="another"), KEY, algorithm=ALGORITHM)
    assert refusal(elsewhere) == (
        "token belongs to another gateway's accounts (wrong audience):"
        " sign in to this gateway for a token it accepts"
    )
    assert refusal("not.a.token").startswith("invalid token: ")


def test_a_token_expired_past_the_five_second_leeway_is_refused() -> None:
    # Refused whenever it is checked: exp + 5 is already in the past.
    token = jwt.encode(claims(exp=int(time.time()) - 5), KEY, algorithm=ALGORITHM)
    assert refusal(token) == "token has expired"


def test_keyset_refusals_say_why() -> None:
    keyset = KeySet.of(PUBLIC)
    stranger = Ed25519PrivateKey.generate()
    token = issue(stranger, "ann", 60)
    assert refusal(token, keyset) == "invalid token: signed by an unknown key"
    assert refusal("garbage", keyset).startswith("invalid token: ")


def test_keyset_of_keeps_the_current_key_and_every_retired_one() -> None:
    old = Ed25519PrivateKey.generate().public_key()
    keyset = KeySet.of(PUBLIC, old)
    assert keyset.current == fingerprint(PUBLIC)
    assert set(keyset.keys) == {fingerprint(PUBLIC), fingerprint(old)}
    untagged = jwt.encode(claims(), KEY, algorithm=ALGORITHM)
    assert verify(untagged, keyset).sub == "ann"


def test_fingerprints_are_sixteen_hex_digits_of_the_public_key() -> None:
    assert fingerprint(KEY) == fingerprint(PUBLIC)
    assert len(fingerprint(KEY)) == 16
    int(fingerprint(KEY), 16)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), (" 2M ", 120.0), ("3h", 10800.0), ("1d", 86400.0), ("4s", 4.0)],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1h", "0s", "inf", "nan"])
def test_parse_ttl_wants_a_positive_finite_number(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_ttl(text)
    assert str(caught.value) == "a duration must be a positive number"


@pytest.mark.parametrize("text", ["", "h", "1w", "ten"])
def test_parse_ttl_says_what_it_could_not_read(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_ttl(text)
    assert str(caught.value) == f"not a duration: {text!r} (try 30m, 1h or 7d)"


# --- audience and lifetime -----------------------------------------------------------------

HERE = "bitinglip:accounts:here"


def test_a_token_is_for_the_accounts_it_names() -> None:
    token = issue(KEY, "ann", 60, audience=HERE)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == HERE
    assert verify(token, PUBLIC, audience=HERE).sub == "ann"
    assert "wrong audience" in refusal(token)  # a verifier for no accounts
    with pytest.raises(TokenError, match="another gateway's accounts"):
        verify(token, PUBLIC, audience="bitinglip:accounts:elsewhere")


def test_a_token_naming_several_audiences_is_refused() -> None:
    both = jwt.encode(claims(aud=[HERE, "bitinglip:accounts:elsewhere"]), KEY, algorithm=ALGORITHM)
    with pytest.raises(TokenError, match="audience"):
        verify(both, PUBLIC, audience=HERE)


def test_lifetimes_are_capped_at_issue() -> None:
    assert verify(issue(KEY, "ann", 3600, max_ttl=3600), PUBLIC).sub == "ann"
    with pytest.raises(ValueError) as caught:
        issue(KEY, "ann", 7200, max_ttl=3600)
    assert str(caught.value) == "a token may live at most 1h here, not 2h"


def test_lifetimes_are_capped_at_verify() -> None:
    # Minted by whoever holds the key, without asking the cap.
    now = int(time.time())
    long = jwt.encode(claims(iat=now, exp=now + 86400 * 400), KEY, algorithm=ALGORITHM)
    assert verify(long, PUBLIC).sub == "ann"
    with pytest.raises(TokenError) as caught:
        verify(long, PUBLIC, max_ttl=86400 * 365)
    assert str(caught.value) == "token lives longer than this gateway allows (365d)"


@pytest.mark.parametrize(
    ("seconds", "text"), [(86400.0, "1d"), (7200.0, "2h"), (90.0, "90s"), (600.0, "10m")]
)
def test_describe_ttl(seconds: float, text: str) -> None:
    assert describe_ttl(seconds) == text

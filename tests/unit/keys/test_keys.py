"""Key files on disk, membership provisioning, and user tokens (pure: temp dirs only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from keys import keyring as ks
from keys.files import raw_public
from keys.tokens import ALGORITHM, AUDIENCE, ISSUER
from protocols import peer_id_of, verify_certificate

# --- data directory and identity ----------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_is_created_once_private_and_stable(tmp_path: Path) -> None:
    data = tmp_path / "peer"
    first = keys.peer_id(data)
    key_file = data / ks.IDENTITY
    assert key_file.exists()
    assert _mode(key_file) == 0o600
    content = key_file.read_bytes()
    assert keys.peer_id(data) == first
    assert key_file.read_bytes() == content
    assert first == peer_id_of(raw_public(keys.identity(data)))
    assert not list(data.glob("*.tmp"))


def test_identity_differs_between_directories(tmp_path: Path) -> None:
    assert keys.peer_id(tmp_path / "a") != keys.peer_id(tmp_path / "b")


def test_identity_refuses_a_non_ed25519_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

    pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / ks.IDENTITY).write_bytes(pem)
    with pytest.raises(ValueError, match="Ed25519"):
        keys.identity(tmp_path)


def test_default_data_dir_prefers_bitinglip_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BITINGLIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert keys.default_data_dir() == tmp_path / "home"


def test_default_data_dir_uses_xdg_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BITINGLIP_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert keys.default_data_dir() == tmp_path / "xdg" / "bitinglip"


@pytest.mark.parametrize("xdg", [None, ""])
def test_default_data_dir_falls_back_to_local_share(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None
) -> None:
    monkeypatch.delenv("BITINGLIP_HOME", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keys.default_data_dir() == tmp_path / ".local" / "share" / "bitinglip"


def test_empty_bitinglip_home_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BITINGLIP_HOME", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert keys.default_data_dir() == tmp_path / "bitinglip"


# --- operator, provisioning, certificates -------------------------------------------------


def test_init_operator_is_idempotent_and_keeps_secrets_private(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    operator = (tmp_path / ks.OPERATOR_KEY).read_bytes()
    jwt_key = (tmp_path / ks.JWT_KEY).read_bytes()
    keys.init_operator(tmp_path)
    assert (tmp_path / ks.OPERATOR_KEY).read_bytes() == operator
    assert (tmp_path / ks.JWT_KEY).read_bytes() == jwt_key
    assert _mode(tmp_path / ks.OPERATOR_KEY) == 0o600
    assert _mode(tmp_path / ks.JWT_KEY) == 0o600
    assert operator != jwt_key


@pytest.mark.parametrize("role", ["node", "gateway", "client"])
def test_provision_writes_a_certificate_that_verifies(tmp_path: Path, role: str) -> None:
    operator_dir, peer_dir = tmp_path / "operator", tmp_path / "peer"
    peer = keys.provision(peer_dir, operator_dir, role)
    assert peer == keys.peer_id(peer_dir)
    assert (peer_dir / ks.OPERATOR_PUB).read_bytes() == (
        operator_dir / ks.OPERATOR_PUB
    ).read_bytes()
    assert (peer_dir / ks.JWT_PUB).read_bytes() == (operator_dir / ks.JWT_PUB).read_bytes()
    assert not (peer_dir / ks.OPERATOR_KEY).exists()
    # Gateways issue tokens to their users; other peers only verify.
    assert (peer_dir / ks.JWT_KEY).exists() == (role == "gateway")
    if role == "gateway":
        assert (peer_dir / ks.JWT_KEY).read_bytes() == (operator_dir / ks.JWT_KEY).read_bytes()
        assert _mode(peer_dir / ks.JWT_KEY) == 0o600

    blob = keys.certificate(peer_dir, role)
    assert blob == (peer_dir / ks.CERTIFICATE).read_bytes()
    cert = verify_certificate(blob, keys.operator_public(peer_dir), time.time())
    assert (cert.peer_id, cert.role) == (peer, role)
    assert cert.expires_at - cert.issued_at == pytest.approx(ks.CERT_LIFETIME)


def test_provision_into_the_operator_directory_itself(tmp_path: Path) -> None:
    peer = keys.provision(tmp_path, tmp_path, "gateway")
    cert = verify_certificate(
        keys.certificate(tmp_path, "gateway"), keys.operator_public(tmp_path), time.time()
    )
    assert cert.peer_id == peer


def test_operator_key_holder_admits_itself(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    blob = keys.certificate(tmp_path, "node")
    cert = verify_certificate(blob, keys.operator_public(tmp_path), time.time())
    assert (cert.peer_id, cert.role) == (keys.peer_id(tmp_path), "node")
    assert keys.certificate(tmp_path, "node") == blob  # now read back from disk


def test_certificate_without_admission_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(keys.NotAdmitted) as caught:
        keys.certificate(tmp_path, "gateway")
    message = str(caught.value)
    assert f"bitinglip keys admit {keys.peer_id(tmp_path)} --role gateway" in message
    assert ks.CERTIFICATE in message
    assert ks.OPERATOR_PUB in message
    assert str(tmp_path) in message


def test_admit_then_write_certificate(tmp_path: Path) -> None:
    operator_dir, peer_dir = tmp_path / "operator", tmp_path / "peer"
    keys.init_operator(operator_dir)
    peer = keys.peer_id(peer_dir)
    keys.write_certificate(peer_dir, keys.admit(operator_dir, peer, "node", lifetime=60))
    assert _mode(peer_dir / ks.CERTIFICATE) == 0o600
    cert = verify_certificate(
        keys.certificate(peer_dir, "node"), keys.operator_public(operator_dir), time.time()
    )
    assert cert.peer_id == peer
    assert cert.expires_at - cert.issued_at == pytest.approx(60)


def test_operator_public_and_jwt_keys_need_their_files(tmp_path: Path) -> None:
    with pytest.raises(keys.NotAdmitted, match=ks.OPERATOR_PUB):
        keys.operator_public(tmp_path)
    with pytest.raises(keys.NotAdmitted, match="keys init"):
        keys.jwt_keys(tmp_path)


def test_jwt_keys_private_on_operator_public_on_peer(tmp_path: Path) -> None:
    operator_dir, peer_dir = tmp_path / "operator", tmp_path / "peer"
    keys.provision(peer_dir, operator_dir, "node")
    signing = keys.jwt_keys(operator_dir)
    checking = keys.jwt_keys(peer_dir)
    assert signing.private is not None
    assert checking.private is None
    assert raw_public(checking.public) == raw_public(signing.public)
    token = keys.issue(signing.private, "alice", 60)
    assert keys.verify(token, checking.public).sub == "alice"


# --- tokens -------------------------------------------------------------------------------

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "jti": "abc123",
        "scope": "inference",
    }
    return claims | changes


def _unsigned_parts(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _hs256(secret: bytes, claims: dict[str, Any]) -> str:
    signing_input = _unsigned_parts({"alg": "HS256", "typ": "JWT"}, claims)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def test_token_round_trip() -> None:
    token = keys.issue(KEY, "alice", 3600, scope="admin")
    claims = keys.verify(token, PUBLIC)
    assert (claims.sub, claims.scope) == ("alice", "admin")
    assert len(claims.jti) == 32
    assert claims.exp == pytest.approx(time.time() + 3600, abs=5)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == ALGORITHM


def test_tokens_have_distinct_ids() -> None:
    first = keys.verify(keys.issue(KEY, "alice", 60), PUBLIC)
    second = keys.verify(keys.issue(KEY, "alice", 60), PUBLIC)
    assert first.jti != second.jti


def test_expired_token_is_refused() -> None:
    token = keys.issue(KEY, "alice", -60)
    with pytest.raises(keys.TokenError, match="expired"):
        keys.verify(token, PUBLIC)


def test_token_within_leeway_is_accepted() -> None:
    token = jwt.encode(_claims(exp=int(time.time()) - 1), KEY, algorithm=ALGORITHM)
    assert keys.verify(token, PUBLIC).sub == "alice"


def test_token_not_yet_valid_is_refused() -> None:
    later = int(time.time()) + 600
    token = jwt.encode(_claims(nbf=later, iat=later), KEY, algorithm=ALGORITHM)
    with pytest.raises(keys.TokenError):
        keys.verify(token, PUBLIC)


def test_wrong_audience_is_refused() -> None:
    token = jwt.encode(_claims(aud="someone-else"), KEY, algorithm=ALGORITHM)
    with pytest.raises(keys.TokenError, match="audience"):
        keys.verify(token, PUBLIC)


def test_wrong_issuer_is_refused() -> None:
    token = jwt.encode(_claims(iss="mallory"), KEY, algorithm=ALGORITHM)
    with pytest.raises(keys.TokenError, match="issuer"):
        keys.verify(token, PUBLIC)


def test_tampered_signature_is_refused() -> None:
    head, body, sig = keys.issue(KEY, "alice", 60).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    with pytest.raises(keys.TokenError):
        keys.verify(f"{head}.{body}.{_b64(bytes(raw))}", PUBLIC)


def test_tampered_claims_are_refused() -> None:
    head, _, sig = keys.issue(KEY, "alice", 60).split(".")
    forged_body = _b64(json.dumps(_claims(sub="root", scope="admin")).encode())
    with pytest.raises(keys.TokenError):
        keys.verify(f"{head}.{forged_body}.{sig}", PUBLIC)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = _unsigned_parts({"alg": alg, "typ": "JWT"}, _claims()) + "."
    with pytest.raises(keys.TokenError):
        keys.verify(token, PUBLIC)


@pytest.mark.parametrize(
    "secret",
    [
        raw_public(PUBLIC),
        PUBLIC.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        PUBLIC.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ],
    ids=["raw", "pem", "openssh"],
)
def test_hs256_signed_with_the_public_key_is_refused(secret: bytes) -> None:
    with pytest.raises(keys.TokenError):
        keys.verify(_hs256(secret, _claims()), PUBLIC)


def test_token_signed_by_another_key_is_refused() -> None:
    token = keys.issue(Ed25519PrivateKey.generate(), "alice", 60)
    with pytest.raises(keys.TokenError):
        keys.verify(token, PUBLIC)


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss", "jti"])
def test_token_missing_a_required_claim_is_refused(claim: str) -> None:
    claims = _claims()
    del claims[claim]
    token = jwt.encode(claims, KEY, algorithm=ALGORITHM)
    with pytest.raises(keys.TokenError):
        keys.verify(token, PUBLIC)


def test_token_without_scope_has_an_empty_scope() -> None:
    claims = _claims()
    del claims["scope"]
    assert keys.verify(jwt.encode(claims, KEY, algorithm=ALGORITHM), PUBLIC).scope == ""


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "..."])
def test_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(keys.TokenError):
        keys.verify(token, PUBLIC)


# --- token keys: kid and rotation ---------------------------------------------------------

RETIRED = Ed25519PrivateKey.generate()
KEYSET = keys.KeySet.of(PUBLIC, RETIRED.public_key())


def test_tokens_name_their_key() -> None:
    header = jwt.get_unverified_header(keys.issue(KEY, "alice", 60))
    assert header["kid"] == keys.fingerprint(KEY) == keys.fingerprint(PUBLIC)
    assert len(header["kid"]) == 16
    assert keys.fingerprint(RETIRED) != keys.fingerprint(KEY)


def test_keyset_picks_the_key_by_kid() -> None:
    assert keys.verify(keys.issue(KEY, "alice", 60), KEYSET).sub == "alice"
    assert keys.verify(keys.issue(RETIRED, "bob", 60), KEYSET).sub == "bob"
    # Tokens from before kids were issued are checked against the current key.
    assert keys.verify(jwt.encode(_claims(), KEY, algorithm=ALGORITHM), KEYSET).sub == "alice"
    with pytest.raises(keys.TokenError):
        keys.verify(jwt.encode(_claims(), RETIRED, algorithm=ALGORITHM), KEYSET)


@pytest.mark.parametrize("kid", ["0123456789abcdef", "", 7, None, ["x"]])
def test_unknown_or_odd_kid_is_refused(kid: object) -> None:
    # Signed by the current key itself: only the kid is wrong.
    unsigned = _unsigned_parts({"alg": ALGORITHM, "typ": "JWT", "kid": kid}, _claims())
    token = unsigned + "." + _b64(KEY.sign(unsigned.encode()))
    with pytest.raises(keys.TokenError):
        keys.verify(token, KEYSET)


def test_kid_of_one_key_with_the_signature_of_another_is_refused() -> None:
    token = jwt.encode(_claims(), RETIRED, ALGORITHM, {"kid": keys.fingerprint(KEY)})
    with pytest.raises(keys.TokenError):
        keys.verify(token, KEYSET)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_keyset_keeps_refusing_other_algorithms(alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": keys.fingerprint(KEY)}
    unsigned = _unsigned_parts(header, _claims())
    mac = hmac.new(raw_public(PUBLIC), unsigned.encode(), hashlib.sha256).digest()
    for token in (unsigned + ".", unsigned + "." + _b64(mac)):
        with pytest.raises(keys.TokenError):
            keys.verify(token, KEYSET)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "..."])
def test_keyset_refuses_malformed_tokens(token: str) -> None:
    with pytest.raises(keys.TokenError):
        keys.verify(token, KEYSET)


def test_rotation_keeps_old_tokens_valid_and_reaches_gateways(tmp_path: Path) -> None:
    operator_dir, gateway_dir = tmp_path / "operator", tmp_path / "gateway"
    keys.init_operator(operator_dir)
    old = keys.jwt_keys(operator_dir).private
    assert old is not None
    before = keys.issue(old, "alice", 600)

    kid = keys.rotate_jwt(operator_dir)
    new = keys.jwt_keys(operator_dir).private
    assert new is not None and kid == keys.fingerprint(new) != keys.fingerprint(old)
    assert (operator_dir / f"jwt.{keys.fingerprint(old)}.pub").exists()
    assert _mode(operator_dir / ks.JWT_KEY) == 0o600
    after = keys.issue(new, "bob", 600)

    keys.provision(gateway_dir, operator_dir, "gateway")
    assert keys.jwt_keys(gateway_dir).private is not None
    assert keys.fingerprint(keys.jwt_keys(gateway_dir).public) == kid
    keyset = keys.jwt_keyset(gateway_dir)
    assert keyset.current == kid
    assert set(keyset.keys) == {kid, keys.fingerprint(old)}
    assert keys.verify(before, keyset).sub == "alice"
    assert keys.verify(after, keyset).sub == "bob"
    # Deleting a retired key is how its tokens are refused before they expire.
    (gateway_dir / f"jwt.{keys.fingerprint(old)}.pub").unlink()
    with pytest.raises(keys.TokenError):
        keys.verify(before, keys.jwt_keyset(gateway_dir))


def test_rotation_needs_the_signing_key(tmp_path: Path) -> None:
    keys.provision(tmp_path / "node", tmp_path / "operator", "node")
    with pytest.raises(keys.NotAdmitted, match="operator"):
        keys.rotate_jwt(tmp_path / "node")


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("7d", 7 * 86400.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        ("0.5", 0.5),
    ],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert keys.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", " ", "m", "h1", "abc", "1w", "1 hour", "0", "-5m", "0s"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        keys.parse_ttl(text)


def test_parse_ttl_error_suggests_a_format() -> None:
    with pytest.raises(ValueError, match="30m"):
        keys.parse_ttl("soon")


@pytest.mark.parametrize("text", ["nan", "inf", "infd"])
def test_parse_ttl_refuses_non_finite(text: str) -> None:
    with pytest.raises(ValueError):
        keys.parse_ttl(text)


def test_private_files_are_not_group_or_world_readable_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        keys.identity(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / ks.IDENTITY) == 0o600


def test_a_retired_key_is_refused_for_good_wherever_it_is_copied(tmp_path: Path) -> None:
    operator_dir, gateway_dir = tmp_path / "operator", tmp_path / "gateway"
    keys.init_operator(operator_dir)
    old = keys.jwt_keys(operator_dir).private
    assert old is not None
    before = keys.issue(old, "alice", 600)
    keys.rotate_jwt(operator_dir)
    keys.provision(gateway_dir, operator_dir, "gateway")  # the gateway holds the old key
    kid = keys.fingerprint(old)

    with pytest.raises(ValueError, match="rotate-jwt"):  # the key signing now: rotate first
        keys.retire_jwt(operator_dir, keys.fingerprint(keys.jwt_keys(operator_dir).public))
    with pytest.raises(ValueError, match="no previous token key 'nope'"):
        keys.retire_jwt(operator_dir, "nope")
    keys.retire_jwt(operator_dir, kid)
    assert not (operator_dir / f"jwt.{kid}.pub").exists()
    assert (operator_dir / ks.JWT_REFUSED).read_text() == f"{kid}\n"

    # A gateway provisioned again gets the list; one that kept a copy of the key still
    # refuses it once the list reaches it, whatever else is in its directory.
    keys.provision(gateway_dir, operator_dir, "gateway")
    assert (gateway_dir / f"jwt.{kid}.pub").exists()  # left from before
    keyset = keys.jwt_keyset(gateway_dir)
    assert kid not in keyset.keys
    with pytest.raises(keys.TokenError, match="unknown key"):
        keys.verify(before, keyset)
    keys.retire_jwt(operator_dir, kid)  # again: harmless
    assert (operator_dir / ks.JWT_REFUSED).read_text() == f"{kid}\n"


def test_the_current_key_is_never_refused_by_the_list() -> None:
    keyset = keys.KeySet.of(PUBLIC, RETIRED.public_key(), refused=[keys.fingerprint(PUBLIC)])
    assert keys.verify(keys.issue(KEY, "alice", 60), keyset).sub == "alice"


def test_token_key_files_change_when_keys_do(tmp_path: Path) -> None:
    keys.init_operator(tmp_path)
    first = keys.jwt_files(tmp_path)
    assert [name for name, _ in first] == [ks.JWT_KEY, ks.JWT_PUB]
    kid = keys.fingerprint(keys.jwt_keys(tmp_path).public)
    keys.rotate_jwt(tmp_path)
    rotated = keys.jwt_files(tmp_path)
    assert rotated != first
    keys.retire_jwt(tmp_path, kid)
    assert [name for name, _ in keys.jwt_files(tmp_path)] == [
        ks.JWT_KEY,
        ks.JWT_PUB,
        ks.JWT_REFUSED,
    ]

"""Identities and credentials: peer identities, the operator's admission key, user tokens,
user passwords."""

from keys.files import default_data_dir
from keys.keyring import (
    JwtKeys,
    NotAdmitted,
    admit,
    certificate,
    identity,
    init_operator,
    jwt_keys,
    jwt_keyset,
    operator_public,
    peer_id,
    provision,
    rotate_jwt,
    write_certificate,
)
from keys.passwords import WeakPassword, hash_password, verify_password
from keys.tokens import Claims, KeySet, TokenError, fingerprint, issue, parse_ttl, verify

__all__ = [
    "Claims",
    "JwtKeys",
    "KeySet",
    "NotAdmitted",
    "TokenError",
    "WeakPassword",
    "admit",
    "certificate",
    "default_data_dir",
    "fingerprint",
    "hash_password",
    "identity",
    "init_operator",
    "issue",
    "jwt_keys",
    "jwt_keyset",
    "operator_public",
    "parse_ttl",
    "peer_id",
    "provision",
    "rotate_jwt",
    "verify",
    "verify_password",
    "write_certificate",
]

"""Identities and credentials: peer identities, the operator's admission key, user tokens."""

from keys.store import default_data_dir
from keys.swarm import (
    JwtKeys,
    NotAdmitted,
    admit,
    certificate,
    identity,
    init_operator,
    jwt_keys,
    operator_public,
    peer_id,
    provision,
    write_certificate,
)
from keys.tokens import Claims, TokenError, issue, parse_ttl, verify

__all__ = [
    "Claims",
    "JwtKeys",
    "NotAdmitted",
    "TokenError",
    "admit",
    "certificate",
    "default_data_dir",
    "identity",
    "init_operator",
    "issue",
    "jwt_keys",
    "operator_public",
    "parse_ttl",
    "peer_id",
    "provision",
    "verify",
    "write_certificate",
]

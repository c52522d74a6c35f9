"""libp2p peer ids of Ed25519 keys, computed without libp2p.

A libp2p peer id of an Ed25519 key is the base58btc identity multihash of the
protobuf-encoded public key; knowing that lets a verifier bind a signed record to the
peer id it claims with nothing but the record's bytes.
"""

from __future__ import annotations

import base58

# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}, wrapped in an identity multihash.
_PROTOBUF_ED25519 = bytes([0x08, 0x01, 0x12, 0x20])
_IDENTITY_MULTIHASH = bytes([0x00, 4 + 32])


def peer_id_of(public_key: bytes) -> str:
    """The base58 peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return base58.b58encode(_IDENTITY_MULTIHASH + _PROTOBUF_ED25519 + public_key).decode()

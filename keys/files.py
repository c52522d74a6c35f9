"""Where this machine's files live (the data and config directories), and how files are
written: atomically, secrets readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def default_data_dir() -> Path:
    """``$BITINGLIP_HOME``, else ``$XDG_DATA_HOME/bitinglip``, else ``~/.local/share/bitinglip``."""
    home = os.environ.get("BITINGLIP_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "bitinglip"


def default_config_dir() -> Path:
    """``$BITINGLIP_HOME``, else ``$XDG_CONFIG_HOME/bitinglip``, else ``~/.config/bitinglip``."""
    home = os.environ.get("BITINGLIP_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "bitinglip"


def write_atomic(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write ``path`` so that a reader sees the old file or the new one, never half of one.
    ``mode`` is the new file's (before the umask): 0o600 for a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by its owner only."""
    write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    write_atomic(path, data)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 key at ``path``, creating it on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)
    return key


def raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_pem(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key

"""Key files: where they are written, with which modes, and what a wrong file says."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.files import (
    default_config_dir,
    default_data_dir,
    load_or_create_key,
    load_public_pem,
    public_pem,
    raw_private,
    raw_public,
    write_atomic,
    write_private,
    write_public,
)


def test_secrets_and_public_files_create_missing_folders(tmp_path: Path) -> None:
    secret = tmp_path / "a" / "b" / "secret.key"
    public = tmp_path / "c" / "d" / "key.pub"
    write_private(secret, b"s")
    write_public(public, b"p")
    assert secret.read_bytes() == b"s"
    assert public.read_bytes() == b"p"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_files_without_a_suffix_are_written_too(tmp_path: Path) -> None:
    write_private(tmp_path / "secret", b"1")
    write_public(tmp_path / "public", b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["public", "secret"]


def test_a_rewrite_replaces_the_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "x.key"
    write_private(path, b"a much longer first secret")
    write_private(path, b"short")
    assert path.read_bytes() == b"short"
    assert [p.name for p in tmp_path.iterdir()] == ["x.key"]


def test_raw_private_bytes_rebuild_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    raw = raw_private(key)
    assert len(raw) == 32
    assert raw_public(Ed25519PrivateKey.from_private_bytes(raw)) == raw_public(key)


def test_public_pem_loads_back(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k.key")
    (tmp_path / "k.pub").write_bytes(public_pem(key))
    assert raw_public(load_public_pem(tmp_path / "k.pub")) == raw_public(key)


def test_a_public_file_of_another_kind_of_key_names_the_file(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "odd.pub"
    path.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError) as caught:
        load_public_pem(path)
    assert str(caught.value) == f"{path} does not hold an Ed25519 public key"


@pytest.mark.parametrize(
    ("env", "data", "config"),
    [
        ({"BITINGLIP_HOME": "/srv/bl"}, "/srv/bl", "/srv/bl"),
        (
            {"XDG_DATA_HOME": "/x/data", "XDG_CONFIG_HOME": "/x/config"},
            "/x/data/bitinglip",
            "/x/config/bitinglip",
        ),
        ({}, "HOME/.local/share/bitinglip", "HOME/.config/bitinglip"),
        ({"BITINGLIP_HOME": "", "XDG_DATA_HOME": ""}, "HOME/.local/share/bitinglip", None),
    ],
)
def test_default_directories_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    data: str,
    config: str | None,
) -> None:
    for name in ("BITINGLIP_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    home = str(tmp_path)
    assert default_data_dir() == Path(data.replace("HOME", home))
    if config is not None:
        assert default_config_dir() == Path(config.replace("HOME", home))


def test_an_atomic_write_is_mode_666_before_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    old = os.umask(0)  # so the mode itself shows, not the usual umask's cut of it
    try:
        write_atomic(target, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666
    assert target.read_bytes() == b"{}"
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is gone

"""The images a gateway keeps for URL answers: private files, kept for a while, within a
size cap, the oldest deleted first."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.api.image_store import ImageStore
from tests.unit.gateway.api.test_http import http
from tests.unit.gateway.api.test_images import AUTH, URL, FakeImages, make_app, request

T0 = 1_000_000.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_images_answered_as_urls_are_private_files(tmp_path: Path) -> None:
    directory = tmp_path / "images"
    previous = os.umask(0o022)  # the usual: without care, files would be world-readable
    try:
        async with http(make_app(FakeImages(), directory)) as client:
            body = request(n=2)
            response = await client.post("/v1/images/generations", json=body, headers=AUTH)
    finally:
        os.umask(previous)
    assert response.status_code == 200, response.text
    names = [URL.fullmatch(d["url"]).group(1) for d in response.json()["data"]]  # type: ignore[union-attr]
    assert [mode(directory / f"{name}.png") for name in names] == [0o600, 0o600]
    assert mode(directory) == 0o700


def test_an_existing_directory_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir(mode=0o755)
    ImageStore(tmp_path / "images").save([b"png"], T0)
    assert mode(tmp_path / "images") == 0o700


def test_the_oldest_images_go_first_to_keep_under_the_cap(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ttl=3600, max_bytes=100)
    first = store.save([b"a" * 40], T0)
    os.utime(tmp_path / f"{first[0]}.png", (T0, T0))
    second = store.save([b"b" * 40], T0 + 1)
    os.utime(tmp_path / f"{second[0]}.png", (T0 + 1, T0 + 1))
    third = store.save([b"c" * 40], T0 + 2)  # 120 bytes would not fit: the first goes
    assert store.read(first[0], T0 + 2) is None
    assert store.read(second[0], T0 + 2) == b"b" * 40
    assert store.read(third[0], T0 + 2) == b"c" * 40
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 100


def test_one_answer_over_the_cap_is_still_kept(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, max_bytes=10)
    old = store.save([b"old"], T0)
    new = store.save([b"x" * 8, b"y" * 8], T0)
    assert store.read(old[0], T0) is None
    assert [store.read(name, T0) for name in new] == [b"x" * 8, b"y" * 8]


def test_images_expire_after_their_ttl_and_are_swept(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, ttl=60)
    [name] = store.save([b"png"], T0)
    os.utime(tmp_path / f"{name}.png", (T0, T0))
    assert store.read(name, T0 + 60) == b"png"
    assert store.read(name, T0 + 61) is None
    store.save([b"next"], T0 + 61)
    assert not (tmp_path / f"{name}.png").exists()


def test_only_its_own_names_are_read(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"secret")
    store = ImageStore(tmp_path / "images")
    for name in ("../secret", "secret", "0" * 31, "0" * 33, "A" * 32):
        assert store.read(name, T0) is None

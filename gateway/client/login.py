"""The saved login that terminal tools start from (``bitinglip login`` saves it).

The gateway URL and a token live in ``<config dir>/credentials.json``, mode 0600. The
config dir is ``$BITINGLIP_HOME``, else ``$XDG_CONFIG_HOME/bitinglip``, else
``~/.config/bitinglip``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.client.api_client import normalize_url
from keys.files import default_config_dir, write_private


@dataclass(frozen=True)
class Credentials:
    gateway: str
    token: str
    username: str | None = None
    expires_at: str | float | None = None


def credentials_path() -> Path:
    return default_config_dir() / "credentials.json"


def load_credentials() -> Credentials | None:
    """The saved login, or None; ``ValueError`` if the file is there but unreadable."""
    path = credentials_path()
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read {path} ({exc}): log in again with `bitinglip login`"
        ) from exc
    if not (
        isinstance(body, dict)
        and isinstance(body.get("gateway"), str)
        and isinstance(body.get("token"), str)
    ):
        raise ValueError(f"{path} is not a saved login: log in again with `bitinglip login`")
    username = body.get("username")
    return Credentials(
        body["gateway"],
        body["token"],
        username if isinstance(username, str) else None,
        parse_expiry(body.get("expires_at")),
    )


def save_credentials(credentials: Credentials) -> Path:
    path = credentials_path()
    write_private(path, json.dumps(asdict(credentials), indent=2).encode() + b"\n")
    return path


def saved_login(gateway: str | None) -> tuple[str | None, str | None]:
    """The gateway to use (``gateway``, else the saved one; None if neither) and the saved
    token for it; ``ValueError`` if the saved login is damaged.

    The saved token goes only to the gateway it was issued by: naming another one with
    ``--gateway`` must not hand it a credential for the first.
    """
    saved = load_credentials()
    wanted = gateway or (saved.gateway if saved else None)
    if wanted is None:
        return None, None
    url = normalize_url(wanted)
    if saved is not None and normalize_url(saved.gateway) == url:
        return url, saved.token
    return url, None


def parse_expiry(value: Any) -> str | float | None:
    """The contract leaves its form open: an ISO date or a Unix time."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return None

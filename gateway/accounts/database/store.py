"""``Store``: the gateway's database, every table's methods on one connection."""

from __future__ import annotations

from pathlib import Path

from gateway.accounts.database.usage_tables import UsageTables
from gateway.accounts.database.user_tables import UserTables

FILENAME = "gateway.db"


class Store(UserTables, UsageTables):
    @classmethod
    def open(cls, data_dir: Path) -> Store:
        return cls(data_dir / FILENAME)

"""The gateway's own database: users, API keys, revoked token ids, usage and jobs, in SQLite.

One file, ``<data_dir>/gateway.db``, in WAL mode with ``synchronous=NORMAL``: a write that
returned is in the operating system's hands and survives the gateway being killed (only an
OS crash or power cut can lose the last moments, and never corrupts the file), for a tenth
of the cost of an fsync per call on the answer's critical path. Methods are plain blocking
calls, safe from any thread (one connection behind a lock), so the operator's CLI uses
them as they are; the gateway runs them with ``call``, on a worker thread, so its event
loop never waits on a disk flush. The schema is versioned with ``PRAGMA user_version``.

The schema is in ``schema`` (append a migration to change it), the rows in ``records``, and
each group of tables has a module of methods that ``Store`` puts together.
"""

from __future__ import annotations

from gateway.accounts.database.errors import InviteInvalid, SchemaTooNew, StoreError, UserExists
from gateway.accounts.database.records import (
    USAGE_GROUPS,
    DayTotal,
    KeyRecord,
    SessionRecord,
    UsageRecord,
    UsageSum,
    UsageTotal,
    UserRecord,
    check_username,
)
from gateway.accounts.database.store import FILENAME, Store

__all__ = [
    "FILENAME",
    "USAGE_GROUPS",
    "DayTotal",
    "InviteInvalid",
    "KeyRecord",
    "SchemaTooNew",
    "SessionRecord",
    "Store",
    "StoreError",
    "UsageRecord",
    "UsageSum",
    "UsageTotal",
    "UserExists",
    "UserRecord",
    "check_username",
]

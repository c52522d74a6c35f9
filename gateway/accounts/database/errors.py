"""What the database refuses::

StoreError
├── UserExists      a user of that name is already there
├── InviteInvalid   no unused, unexpired invitation has that code
└── SchemaTooNew    the file was written by a newer gateway
"""

from __future__ import annotations


class StoreError(Exception):
    """The database refused an operation."""


class UserExists(StoreError):
    pass


class InviteInvalid(StoreError):
    """No unused, unexpired invitation has that code."""


class SchemaTooNew(StoreError):
    """The file was written by a newer version of the gateway."""

"""A gateway's business rules: users and their keys, plans and the limiter, durable usage,
and the SQLite database they live in. No HTTP here: refusals are ``Refused`` errors that
``gateway.api`` turns into HTTP errors."""

from __future__ import annotations

from gateway.accounts.database import Store
from gateway.accounts.errors import Busy, LimitReached, Refused
from gateway.accounts.limits import Limiter, Plan, Plans
from gateway.accounts.metering import Meter, Outcome, metered
from gateway.accounts.sessions import Sessions
from gateway.accounts.throttle import PasswordWork, SignInThrottle
from gateway.accounts.tokens import operator_token
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts, create_user

__all__ = [
    "Accounts",
    "Busy",
    "LimitReached",
    "Limiter",
    "Meter",
    "Outcome",
    "PasswordWork",
    "Plan",
    "Plans",
    "Refused",
    "Sessions",
    "SignInThrottle",
    "Store",
    "UsageMeter",
    "create_user",
    "metered",
    "operator_token",
]

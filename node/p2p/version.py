"""The software version peers advertise."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("bitinglip")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0+source"

"""Helpers of the scripts in this folder; the scripts themselves are run, not imported."""

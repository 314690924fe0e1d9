"""Errors a user's own input can cause, shared by every subpackage (the lowest floor: imports nothing).

The command line turns each into a one-line message and exit status 2.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file, flag or override that cannot be used; the message names the key."""

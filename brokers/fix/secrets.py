"""FIX passwords from the environment or an owner-only (0600) file; never from the command line."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from tradeloop.data.redact import register_secret


class SecretError(ValueError):
    """A password source that is missing or unsafe."""


def password_from_env(var: str) -> str:
    """The value of environment variable ``var`` (which must be set and non-empty)."""
    value = os.environ.get(var)
    if not value:
        raise SecretError(f"environment variable {var} is not set or empty")
    return value


def password_from_file(path: str | Path) -> str:
    """The first line of ``path``, which must not be readable or writable by group or others."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise SecretError(f"cannot read password file {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"password file {p} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                          " chmod 600 it")
    value = p.read_text(encoding="utf-8").splitlines()[0].strip() if p.stat().st_size else ""
    if not value:
        raise SecretError(f"password file {p} is empty")
    return value


def load_password(env: str | None = None, file: str | Path | None = None) -> str | None:
    """The password from ``env`` or ``file`` (at most one may be given); None when neither is."""
    if env and file:
        raise SecretError("give the password through an environment variable or a file, not both")
    if env:
        return register(password_from_env(env))
    if file:
        return register(password_from_file(file))
    return None


def register(password: str | None) -> str | None:
    """Hide ``password`` in every later log event, whoever logs it (see data.redact)."""
    register_secret(password)
    return password

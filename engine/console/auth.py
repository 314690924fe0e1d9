"""Who may use the console: users and their secrets, login sessions, failed-login rate limits, CSRF tokens.

Secrets come from the environment (``TRADELOOP_CONSOLE_TOKEN`` for a trader,
``TRADELOOP_CONSOLE_VIEWER_TOKEN`` for a viewer) or from a users file of mode 0600 holding salted
scrypt hashes (one ``NAME ROLE scrypt$N$r$p$SALT$HASH`` line per user); never from the command line.
Every comparison of a secret or token is constant-time. Sessions live in this process only
(server-side expiry: an absolute lifetime and an idle timeout); the cookie holds a random id.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tradeloop.errors import ConfigError

Role = Literal["viewer", "trader"]
ROLES: tuple[Role, ...] = ("viewer", "trader")
TOKEN_ENV = {"trader": "TRADELOOP_CONSOLE_TOKEN", "viewer": "TRADELOOP_CONSOLE_VIEWER_TOKEN"}
MIN_SECRET = 12                     # characters: a shorter token or password is refused
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_SESSIONS = 1000                 # the oldest is dropped past this
USERS_FILE_MAX = 1 << 20


@dataclass(frozen=True)
class User:
    """A console user: the name that lands in the audit trail, and what they may do."""

    name: str
    role: Role


@dataclass(frozen=True)
class _Hash:
    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


def _scrypt(secret: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)


def hash_secret(secret: str) -> str:
    """The users-file form of a password: ``scrypt$N$r$p$SALT$HASH`` (hex), with a fresh random salt."""
    salt = secrets.token_bytes(16)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${_scrypt(secret, salt).hex()}"


def _parse_hash(text: str) -> _Hash:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$SALT$HASH")
    n, r, p = (int(x) for x in parts[1:4])
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return _Hash(bytes.fromhex(parts[4]), bytes.fromhex(parts[5]), n, r, p)


def check_private(path: Path, what: str) -> None:
    """A file holding secrets must be a regular file that only its owner can read (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}; it holds secrets and must be "
                          f"0600 (chmod 600 {path})")


class Users:
    """The console's users: the environment's two tokens and the users file's hashed passwords."""

    def __init__(self, tokens: dict[Role, str], hashed: dict[str, tuple[Role, _Hash]]) -> None:
        self._tokens = {role: hashlib.sha256(t.encode()).digest() for role, t in tokens.items()}
        self._hashed = hashed
        self._dummy = _Hash(b"\0" * 16, b"\0" * 32)   # checked for unknown names: the same work either way

    @classmethod
    def load(cls, environ: dict[str, str] | os._Environ, users_file: str | Path | None) -> "Users":
        """Tokens from ``environ`` and users from ``users_file`` (mode 0600); ConfigError names what is wrong."""
        tokens: dict[Role, str] = {}
        for role, var in TOKEN_ENV.items():
            value = environ.get(var, "")
            if value:
                if len(value) < MIN_SECRET:
                    raise ConfigError(f"{var} is {len(value)} characters; a console token needs at least {MIN_SECRET}")
                tokens[role] = value   # type: ignore[index]
        if len(tokens) == 2 and tokens["trader"] == tokens["viewer"]:
            raise ConfigError(f"{TOKEN_ENV['trader']} and {TOKEN_ENV['viewer']} are the same token; "
                              "a viewer would be a trader")
        hashed = read_users(Path(users_file)) if users_file else {}
        if not tokens and not hashed:
            raise ConfigError(f"no console users: set {TOKEN_ENV['trader']} (and/or {TOKEN_ENV['viewer']}) in the "
                              "environment, or give --users FILE")
        return cls(tokens, hashed)

    def verify(self, name: str, secret: str) -> User | None:
        """The user these credentials belong to, or None. A users-file name is checked against its hash;
        otherwise (or with no name) the secret is compared with both environment tokens."""
        name = name.strip()
        entry = self._hashed.get(name)
        h = entry[1] if entry else self._dummy
        ok_file = hmac.compare_digest(_scrypt(secret, h.salt, h.n, h.r, h.p), h.digest) and entry is not None
        if ok_file:
            return User(name, entry[0])
        if name and name not in ("trader", "viewer"):
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        found: User | None = None
        for role in ROLES:   # both compared, always
            expected = self._tokens.get(role, b"\1" * 32)
            if hmac.compare_digest(digest, expected) and role in self._tokens and (not name or name == role):
                found = User(role, role)
        return found


def read_users(path: Path) -> dict[str, tuple[Role, _Hash]]:
    """Parse a users file (mode 0600): ``NAME ROLE scrypt$...`` lines, ``#`` comments; errors name the line."""
    check_private(path, "users file")
    if path.stat().st_size > USERS_FILE_MAX:
        raise ConfigError(f"users file {path} is over {USERS_FILE_MAX:,} bytes")
    out: dict[str, tuple[Role, _Hash]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"users file {path}: cannot read it as UTF-8 text ({e})") from None
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ConfigError(f"{path}:{no}: expected NAME ROLE HASH "
                              "(tradeloop console --add-user NAME:ROLE writes it)")
        name, role, text_hash = parts
        if role not in ROLES:
            raise ConfigError(f"{path}:{no}: role {role!r}; use viewer or trader")
        if name in out:
            raise ConfigError(f"{path}:{no}: user {name!r} appears twice")
        try:
            out[name] = (role, _parse_hash(text_hash))   # type: ignore[assignment]
        except ValueError as e:
            raise ConfigError(f"{path}:{no}: bad password hash: {e}") from None
    return out


def add_user(path: Path, name: str, role: str, secret: str) -> None:
    """Add (or replace) ``name`` with a hash of ``secret`` in the users file, creating it with mode 0600."""
    if not name or any(c.isspace() for c in name) or len(name) > 64:
        raise ConfigError(f"user name {name!r}: 1-64 characters, no spaces")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}; use viewer or trader")
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"password of {len(secret)} characters; at least {MIN_SECRET}")
    lines: list[str] = []
    if path.exists():
        read_users(path)   # refuses a file others can read, or a broken one
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                 if not (ln.split() and ln.split()[0] == name)]
    lines.append(f"{name} {role} {hash_secret(secret)}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # written aside, then renamed: never half a file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Session:
    """One login: its user, its CSRF token, and when it started and was last used (monotonic seconds)."""

    user: User
    csrf: str
    started: float
    seen: float


@dataclass
class Sessions:
    """Login sessions by cookie id, expiring ``max_age_s`` after login or ``idle_s`` after the last request."""

    max_age_s: float = 8 * 3600.0
    idle_s: float = 30 * 60.0
    _by_id: "OrderedDict[str, Session]" = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``: its cookie id and the session."""
        now = time.monotonic()
        sid, s = secrets.token_urlsafe(32), Session(user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[sid] = s
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return sid, s

    def get(self, sid: str | None, *, touch: bool = True) -> Session | None:
        """The live session of cookie id ``sid`` (refreshing its idle timer if ``touch``), or None if expired."""
        if not sid or len(sid) > 128:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.started > self.max_age_s or now - s.seen > self.idle_s:
                del self._by_id[sid]
                return None
            if touch:
                s.seen = now
            return s

    def alive(self, s: Session) -> bool:
        """Whether a session (held by a stream) has not expired nor been logged out."""
        now = time.monotonic()
        with self._lock:
            return (any(v is s for v in self._by_id.values()) and now - s.started <= self.max_age_s
                    and now - s.seen <= self.idle_s)

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class LoginLimiter:
    """Failed logins per client: after ``limit`` within ``window_s`` seconds that client is refused (429)."""

    limit: int = 5
    window_s: float = 60.0
    _fails: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            q = self._fails.get(client)
            if not q:
                return 0.0
            while q and now - q[0] > self.window_s:
                q.popleft()
            return self.window_s - (now - q[0]) if len(q) >= self.limit else 0.0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) > 10_000:   # bounded: forget clients with no recent failure
                self._fails = {k: v for k, v in self._fails.items() if v and now - v[-1] <= self.window_s}
            self._fails.setdefault(client, deque(maxlen=self.limit * 2)).append(now)

"""FIX 4.4 over asyncio TCP: codec, session layer (logon, heartbeats, resend/gap fill) and the trader's adapter."""
from .client import Backoff, CancelRejected, FixBroker
from .codec import Framer, Garbled, Msg, Problem, decode, encode, redact, validate
from .secrets import SecretError, load_password
from .session import Application, FixSession, SessionConfig
from .spec import MsgType, RejectReason, Tag
from .store import MemoryStore, SequenceStore, SQLiteSequenceStore

__all__ = [
    "Application", "Backoff", "CancelRejected", "FixBroker", "FixSession", "Framer", "Garbled", "MemoryStore",
    "Msg", "MsgType", "Problem", "RejectReason", "SQLiteSequenceStore", "SecretError", "SequenceStore",
    "SessionConfig", "Tag", "decode", "encode", "load_password", "redact", "validate",
]

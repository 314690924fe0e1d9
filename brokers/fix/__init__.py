"""FIX 4.4 over asyncio TCP: codec, session layer (logon, heartbeats, resend/gap fill) and the trader's adapter."""
from tradeloop.brokers.fix.client import Backoff, CancelRejected, FixBroker
from tradeloop.brokers.fix.codec import Framer, Garbled, Msg, Problem, decode, encode, redact, validate
from tradeloop.brokers.fix.secrets import SecretError, load_password
from tradeloop.brokers.fix.session import Application, FixSession, SessionConfig
from tradeloop.brokers.fix.spec import MsgType, RejectReason, Tag
from tradeloop.brokers.fix.store import MemoryStore, SequenceStore, SQLiteSequenceStore

__all__ = [
    "Application", "Backoff", "CancelRejected", "FixBroker", "FixSession", "Framer", "Garbled", "MemoryStore",
    "Msg", "MsgType", "Problem", "RejectReason", "SQLiteSequenceStore", "SecretError", "SequenceStore",
    "SessionConfig", "Tag", "decode", "encode", "load_password", "redact", "validate",
]

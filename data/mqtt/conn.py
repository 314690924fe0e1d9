"""MQTT server (broker) connection settings: URL, TLS, credentials from the environment, and log redaction.

Credentials never come from a URL or the command line (both end up in shell history and in
``ps``): the username and password are read from ``TRADELOOP_MQTT_USERNAME`` and
``TRADELOOP_MQTT_PASSWORD``. The password is registered as a secret the moment it is read, and
:func:`redact_secrets` (a structlog processor, installed by :func:`install_redaction`) replaces
every registered secret in every log event with ``***``, whoever logs it.

TLS: an ``mqtts://`` URL or a :class:`TlsConfig` turns it on; ``ca_file`` verifies the broker
(system CAs otherwise), ``cert_file``/``key_file`` present a client certificate. The same
settings may come from ``TRADELOOP_MQTT_CA_FILE``, ``TRADELOOP_MQTT_CERT_FILE``, ``TRADELOOP_MQTT_KEY_FILE``.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

ENV_USERNAME = "TRADELOOP_MQTT_USERNAME"
ENV_PASSWORD = "TRADELOOP_MQTT_PASSWORD"
ENV_CA, ENV_CERT, ENV_KEY = "TRADELOOP_MQTT_CA_FILE", "TRADELOOP_MQTT_CERT_FILE", "TRADELOOP_MQTT_KEY_FILE"


from tradeloop.data.redact import (REDACTED, SECRET_KEYS, _SECRETS, install_redaction, redact,  # noqa: F401,E402
                         redact_secrets, register_secret)


class RedactFilter(logging.Filter):
    """stdlib logging filter (for paho/aiomqtt's logger): registered secrets become ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


def paho_logger() -> logging.Logger:
    """The stdlib logger handed to aiomqtt, with redaction attached."""
    log = logging.getLogger("tradeloop.mqtt.client")
    if not any(isinstance(f, RedactFilter) for f in log.filters):
        log.addFilter(RedactFilter())
    return log


# ------------------------------------------------------------------------------------------ settings

@dataclass(frozen=True)
class Credentials:
    """Username and password for the broker; the password never shows in repr or logs."""

    username: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials | None:
        """From ``TRADELOOP_MQTT_USERNAME`` / ``TRADELOOP_MQTT_PASSWORD``; None when no username is set."""
        env = os.environ if env is None else env
        user = env.get(ENV_USERNAME)
        if not user:
            return None
        password = env.get(ENV_PASSWORD) or None
        register_secret(password)
        return cls(user, password)

    def __post_init__(self) -> None:
        register_secret(self.password)


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings: CA bundle to verify the broker, optional client certificate, hostname check."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsConfig | None:
        """From ``TRADELOOP_MQTT_CA_FILE`` / ``_CERT_FILE`` / ``_KEY_FILE``; None when none is set."""
        env = os.environ if env is None else env
        ca, cert, key = env.get(ENV_CA), env.get(ENV_CERT), env.get(ENV_KEY)
        return cls(ca, cert, key) if (ca or cert or key) else None

    def context(self) -> ssl.SSLContext:
        """A client SSL context for these settings."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if not self.check_hostname:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True)
class MqttServer:
    """Where and how to connect: host, port, TLS, credentials."""

    host: str
    port: int
    tls: TlsConfig | None = None
    credentials: Credentials | None = None

    @classmethod
    def from_url(cls, url: str, *, tls: TlsConfig | None = None, credentials: Credentials | None = None,
                 env: Mapping[str, str] | None = None) -> MqttServer:
        """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]``; TLS and credentials default to the environment."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL must be mqtt://host[:port] or mqtts://host[:port], not scheme {parts.scheme!r}")
        if "@" in parts.netloc:
            raise ValueError("broker URL must not contain credentials: set TRADELOOP_MQTT_USERNAME and "
                             "TRADELOOP_MQTT_PASSWORD in the environment instead")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        secure = parts.scheme in ("mqtts", "ssl")
        tls = tls or TlsConfig.from_env(env)
        if secure and tls is None:
            tls = TlsConfig()
        return cls(parts.hostname, parts.port or (8883 if secure else 1883), tls,
                   credentials if credentials is not None else Credentials.from_env(env))

    def client(self, *, identifier: str | None = None, keepalive: int = 10, timeout: float = 5.0,
               max_inflight: int | None = None, clean_session: bool = True,
               queue_type: type | None = None) -> aiomqtt.Client:
        """A new (not yet connected) aiomqtt client for this broker."""
        creds = self.credentials
        return aiomqtt.Client(
            self.host, self.port,
            username=creds.username if creds else None, password=creds.password if creds else None,
            identifier=identifier or f"tradeloop-{uuid.uuid4().hex[:12]}",
            logger=paho_logger(), keepalive=keepalive, timeout=timeout, clean_session=clean_session,
            max_inflight_messages=max_inflight, queue_type=queue_type,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),  # no Nagle delay on small messages
            tls_context=self.tls.context() if self.tls else None,
        )

    def describe(self) -> dict[str, Any]:
        """Loggable connection facts (never the password)."""
        return {"host": self.host, "port": self.port, "tls": self.tls is not None,
                "user": self.credentials.username if self.credentials else None}

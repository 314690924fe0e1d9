"""Market data over MQTT: the wire scheme (topics, v1 JSON payloads), the MqttFeed consumer and its settings.

Topics ``md/<venue>/<symbol>/bar/<interval>``, ``md/<venue>/<symbol>/tick`` and ``md/<venue>/$eos``;
payloads such as ``{"v":1,"ts":<int ns>,"o":..,"h":..,"l":..,"c":..,"vol":..}``. The full schema is in
:mod:`data.mqtt.wire`; the publisher that replays stored data is :mod:`data.replay`.
"""
from .conn import Broker, Credentials, TlsConfig, install_redaction, redact_secrets, register_secret
from .feed import FeedStats, FeedStatus, MqttFeed, MqttFeedError
from .session import Session, Staleness
from .wire import (PayloadError, bar_topic, decode_bar, decode_eos, decode_tick, encode_bar, encode_bar_values,
                   encode_eos, encode_tick, eos_topic, interval_name, parse_topic, tick_topic)

__all__ = ["Broker", "Credentials", "FeedStats", "FeedStatus", "MqttFeed", "MqttFeedError", "PayloadError",
           "Session", "Staleness", "TlsConfig", "bar_topic", "decode_bar", "decode_eos", "decode_tick", "encode_bar",
           "encode_bar_values", "encode_eos", "encode_tick", "eos_topic", "install_redaction", "interval_name",
           "parse_topic", "redact_secrets", "register_secret", "tick_topic"]

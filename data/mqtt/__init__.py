"""Market data over MQTT: the wire scheme (topics, v1 JSON payloads), the MqttFeed consumer and its settings.

Topics ``md/<venue>/<symbol>/bar/<interval>``, ``md/<venue>/<symbol>/tick``, ``md/<venue>/$eos`` and the
lockstep marks ``md/<venue>/$clock`` / ``md/<venue>/$ack/<component>``;
payloads such as ``{"v":1,"ts":<int ns>,"o":..,"h":..,"l":..,"c":..,"vol":..}``. The full schema is in
:mod:`tradeloop.data.mqtt.wire`; the publisher that replays stored data is :mod:`tradeloop.data.replay`.
"""
from tradeloop.data.mqtt.conn import MqttServer, Credentials, TlsConfig, install_redaction, redact_secrets, register_secret
from tradeloop.data.mqtt.feed import Ack, ClockMark, FeedStats, FeedStatus, MqttFeed, MqttFeedError
from tradeloop.data.mqtt.hours import TradingHours, Staleness
from tradeloop.data.mqtt.skew import FutureSkew, interval_ns
from tradeloop.data.mqtt.wire import (PayloadError, ack_topic, bar_topic, clock_topic, decode_bar, decode_eos, decode_mark, decode_tick,
                   encode_bar, encode_bar_values, encode_eos, encode_mark, encode_tick, eos_topic, interval_name,
                   parse_topic, tick_topic)

__all__ = ["Ack", "MqttServer", "ClockMark", "Credentials", "FeedStats", "FeedStatus", "FutureSkew", "MqttFeed",
           "MqttFeedError", "interval_ns",
           "PayloadError", "TradingHours", "Staleness", "TlsConfig", "ack_topic", "bar_topic", "clock_topic", "decode_bar",
           "decode_eos", "decode_mark", "decode_tick", "encode_bar", "encode_bar_values", "encode_eos", "encode_mark",
           "encode_tick", "eos_topic", "install_redaction", "interval_name", "parse_topic", "redact_secrets",
           "register_secret", "tick_topic"]

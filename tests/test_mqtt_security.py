"""Broker authentication and TLS through a real Mosquitto: credentials from the environment, never in logs."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import structlog

from tradeloop.data.loaders import load_bars
from tradeloop.data.mqtt import MqttFeed, MqttFeedError, TlsConfig
from tradeloop.data.replay import replay
from tradeloop.engine.telemetry.logs import configure, run_events
from tests.mosquitto import Mosquitto

PASSWORD = "Tr4der-pw-5f1d9c"  # a value that must never reach a log line


def run(coro, seconds: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, seconds))


@pytest.fixture
def restore_logging():
    old = structlog.get_config()
    yield
    structlog.configure(**old)


@pytest.fixture
def password_broker(tmp_path: Path):
    """A broker that only lets ``trader`` / PASSWORD in."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        pytest.skip("mosquitto_passwd is not installed (Debian package mosquitto)")
    pw_file = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(pw_file), "trader", PASSWORD], check=True, capture_output=True)
    broker = Mosquitto(tmp_path, f"password_file {pw_file}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def orcl(shared_data: Path):
    return load_bars(shared_data / "backtrader" / "orcl-2014.txt", "ORCL")


def test_credentials_from_the_environment_authenticate_and_never_reach_the_logs(
        password_broker, orcl, monkeypatch, capsys, restore_logging):
    monkeypatch.setenv("TRADELOOP_MQTT_USERNAME", "trader")
    monkeypatch.setenv("TRADELOOP_MQTT_PASSWORD", PASSWORD)
    configure(json=True)

    async def scenario():
        async with MqttFeed(password_broker.url, ["ORCL"]) as feed:
            await feed.wait_ready()
            got, _ = await asyncio.gather(_collect(feed), replay([orcl], password_broker.url))
            structlog.get_logger("careless").warning("debugging auth", detail=f"tried password {PASSWORD}",
                                                     password=PASSWORD)
            return got

    with run_events() as events:
        got = run(scenario())
        events.buffer.flush()
        events.buffer.seek(0)
        recorded = events.buffer.read()
    err = capsys.readouterr().err
    assert len(got) == len(orcl)
    assert '"event": "mqtt.subscribed"' in err and '"user": "trader"' in err
    assert PASSWORD not in err and PASSWORD not in recorded
    assert "tried password ***" in err and '"password": "***"' in err


def test_a_wrong_password_fails_fast_without_logging_it(password_broker, monkeypatch, capsys, restore_logging):
    monkeypatch.setenv("TRADELOOP_MQTT_USERNAME", "trader")
    monkeypatch.setenv("TRADELOOP_MQTT_PASSWORD", "wrong-" + PASSWORD)
    configure(json=True)

    async def scenario():
        async with MqttFeed(password_broker.url, ["ORCL"]) as feed:
            return await _collect(feed)

    with pytest.raises(MqttFeedError) as err:
        run(scenario(), 10)
    logs = capsys.readouterr().err
    assert "mqtt.auth_failed" in logs
    assert PASSWORD not in logs and PASSWORD not in str(err.value)


async def _collect(feed):
    return [e async for e in feed]


# ------------------------------------------------------------------------------------------ TLS

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path: Path):
    """A broker on TLS that requires a client certificate signed by a throwaway CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca",
             cwd=tmp_path)
    (tmp_path / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *ext, cwd=tmp_path)
    conf = (f"cafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n"
            "require_certificate true\n")
    broker = Mosquitto(tmp_path, conf).start()
    yield broker, tmp_path
    broker.stop()


def test_tls_with_a_client_certificate(tls_broker, orcl):
    broker, certs = tls_broker
    url = broker.url.replace("mqtt://", "mqtts://")
    tls = TlsConfig(str(certs / "ca.crt"), str(certs / "client.crt"), str(certs / "client.key"))

    async def scenario():
        async with MqttFeed(url, ["ORCL"], tls=tls) as feed:
            await feed.wait_ready()
            got, _ = await asyncio.gather(_collect(feed), replay([orcl], url, tls=tls, qos=1))
            return got

    assert len(run(scenario())) == len(orcl)


def test_tls_without_a_client_certificate_is_refused(tls_broker):
    broker, certs = tls_broker
    url = broker.url.replace("mqtt://", "mqtts://")

    async def scenario():
        async with MqttFeed(url, ["ORCL"], tls=TlsConfig(str(certs / "ca.crt")), backoff=(0.05, 0.1)) as feed:
            with pytest.raises(TimeoutError):
                await feed.wait_ready(0.5)
            return feed.stats

    assert run(scenario()).connects == 0


def test_a_missing_ca_file_is_an_error_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError):
        MqttFeed("mqtts://127.0.0.1:8883", ["ORCL"], tls=TlsConfig(str(tmp_path / "no-such-ca.crt")))

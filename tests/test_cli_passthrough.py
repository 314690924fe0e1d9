"""`tradeloop exchange` and `tradeloop replay` hand their arguments to the modules that own them."""
from __future__ import annotations

import pytest

from engine.cli import main


@pytest.mark.parametrize("command, marker", [("exchange", "--sender"), ("replay", "--mqtt")])
def test_passthrough_commands_show_their_own_options(command, marker, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert marker in capsys.readouterr().out


def test_exchange_refuses_a_missing_password_variable(monkeypatch, capsys):
    monkeypatch.delenv("TL_TEST_NO_SUCH_PASSWORD", raising=False)
    assert main(["exchange", "--port", "0", "--password-env", "TL_TEST_NO_SUCH_PASSWORD"]) == 2

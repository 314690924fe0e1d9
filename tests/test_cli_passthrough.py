"""`tradeloop exchange` and `tradeloop replay` hand their arguments to the modules that own them."""
from __future__ import annotations

import pytest

from tradeloop.engine.cli.main import main


@pytest.mark.parametrize("command, marker", [("exchange", "--sender"), ("replay", "--mqtt")])
def test_passthrough_commands_show_their_own_options(command, marker, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert marker in capsys.readouterr().out


def test_exchange_refuses_a_missing_password_variable(monkeypatch, capsys):
    monkeypatch.delenv("TL_TEST_NO_SUCH_PASSWORD", raising=False)
    assert main(["exchange", "--port", "0", "--password-env", "TL_TEST_NO_SUCH_PASSWORD"]) == 2


def test_models_train_names_a_bad_config(tmp_path, capsys):
    cfg = tmp_path / "train.toml"
    cfg.write_text('name = "x"\ndata = []\ntrain_end = "2012-01-01"\nval_end = "2013-01-01"\nepochz = 3\n')
    assert main(["models", "train", "--config", str(cfg)]) == 2
    assert "epochz" in capsys.readouterr().err
    assert main(["models", "train", "--config", str(tmp_path / "missing.toml")]) == 2


def test_models_train_registers_a_model_from_a_toml_file(tmp_path, capsys):
    pytest.importorskip("torch")
    from pathlib import Path

    from tests.conftest import SHARED_DATA
    qbot = SHARED_DATA / "qbot" / "600519.SH.csv"
    if not qbot.exists():
        pytest.skip("../shared/data is not beside the checkout")
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'name = "cli"\ndata = ["{qbot}"]\ntrain_start = "2012-01-01"\ntrain_end = "2013-01-01"\n'
                   f'val_end = "2013-07-01"\nregistry = "{tmp_path / "reg"}"\nepochs = 1\nprogress = false\n'
                   'onnx = false\n[net]\nkind = "lstm"\n[net.sizes]\n')
    assert main(["models", "train", "--config", str(cfg), "--set", "seed=1"]) == 0
    assert capsys.readouterr().out.strip() == "cli@v0001"

"""Specification: ``tradeloop serve`` refuses a user's mistake with one line naming the argument and
exit status 2, before anything listens; never a traceback."""
from __future__ import annotations

import socket
import subprocess

import pytest

from tradeloop.engine.cli.main import main
from tests.test_models_support import trained
from tests.test_serve_support import REPO, serve_command


@pytest.fixture(scope="module")
def root() -> str:
    return trained("tiny")[0]


@pytest.mark.parametrize("args, words", [
    (["--model", "tiny@latest", "--bind", "localhost"], "--bind 'localhost': expected HOST:PORT"),
    (["--model", "tiny@latest", "--bind", "127.0.0.1:99999"], "--bind '127.0.0.1:99999'"),
    (["--model", "nosuch@latest"], "--model nosuch@latest: no model named 'nosuch'"),
    (["--model", "tiny@v0042"], "--model tiny@v0042: model 'tiny' has no version 'v0042'"),
    (["--model", "tiny@latest", "--backup", "other@v0001"], "--backup other@v0001: 'other' is not a served --model"),
    (["--model", "tiny@latest", "--model", "tiny@v0002"], "model 'tiny' named twice"),
    (["--model", "tiny@latest", "--max-batch", "0"], "max_batch must be >= 1"),
    (["--model", "tiny@latest", "--runtime", "gpu-magic"], "argument --runtime: invalid choice: 'gpu-magic'"),
    (["--model", "tiny@latest", "--runtime", "tensorrt"], "--model tiny@latest with --runtime tensorrt: runtime "
                                                          "tensorrt is unavailable here"),
    (["--model", "bad name"], "--model bad name: bad model reference"),
])
def test_a_mistake_is_one_line_and_exit_2(root, capsys, args, words):
    assert main(["serve", "--registry", root, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_a_missing_registry_folder_and_a_taken_port_are_one_line_errors(root, tmp_path, capsys):
    assert main(["serve", "--registry", str(tmp_path / "none"), "--model", "tiny@latest"]) == 2
    assert f"--registry {tmp_path / 'none'}: no such folder" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(serve_command("--registry", root, "--model", "tiny@latest",
                                            "--bind", f"127.0.0.1:{port}"),
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "tradeloop: error: --bind/--http: cannot listen" in proc.stderr and "Traceback" not in proc.stderr

"""Progress of ``tradeloop models train`` and ``tradeloop data import`` with stderr a pipe: plain lines on
stderr, one per epoch / per file, besides the timed ones (engine/telemetry/progress.py); stdout stays clean."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, need

ROOT = Path(__file__).resolve().parents[1]


def _toml(d: dict) -> str:
    def value(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)
    return "".join(f"{k} = {value(v)}\n" for k, v in d.items() if v is not None)


def _run(args: list[str], env_delay: str | None, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list]:
    """Run ``tradeloop ARGS`` with stdout and stderr pipes; (result, [(seconds since start, stderr line)])."""
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("TRADELOOP_PROGRESS_DELAY", None)
    if env_delay is not None:
        env["TRADELOOP_PROGRESS_DELAY"] = env_delay
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tradeloop.engine.cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:            # as they come: when each line arrived
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    out = proc.stdout.read()
    proc.wait(timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), lines


def test_models_train_reports_one_line_per_epoch_on_a_pipe(tmp_path):
    pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")
    from tests.test_models_support import TINY_FEATURES, TINY_NET, qbot
    cfg = {"name": "prog", "data": [str(qbot("600519.SH"))], "registry": str(tmp_path / "reg"),
           "train_start": "2010-01-01", "train_end": "2013-01-01", "val_end": "2013-07-01", "epochs": 3,
           "patience": 10, "batch_size": 128, "threads": 1, "progress": False, "onnx": False, "net": TINY_NET,
           "features": TINY_FEATURES}
    (tmp_path / "t.toml").write_text(_toml(cfg), encoding="utf-8")
    res, lines = _run(["models", "train", "--config", str(tmp_path / "t.toml")], "0")
    assert res.returncode == 0, lines
    assert res.stdout.strip().startswith("prog@")                    # stdout: the reference only
    text = [ln for _, ln in lines]
    assert all(ln.startswith("models train: ") for ln in text), text
    for epoch in (1, 2, 3):
        assert sum(f"train prog epoch {epoch}/3: val loss" in ln for ln in text) == 1, text
    assert any("loading data" in ln for ln in text) and text[-1].endswith(", done")
    assert "\x1b[" not in "".join(text)                                # plain lines, no bar


def test_models_train_shows_progress_within_a_second_by_default(tmp_path):
    pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")
    from tests.test_models_support import TINY_FEATURES, TINY_NET, qbot
    cfg = {"name": "prog", "data": [str(qbot("600519.SH"))], "registry": str(tmp_path / "reg"),
           "train_start": "2010-01-01", "train_end": "2013-01-01", "val_end": "2013-07-01", "epochs": 2,
           "batch_size": 128, "threads": 1, "progress": False, "onnx": False, "net": TINY_NET,
           "features": TINY_FEATURES}
    (tmp_path / "t.toml").write_text(_toml(cfg), encoding="utf-8")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tradeloop.engine.cli.main"], cwd=ROOT, check=True)
    startup = time.perf_counter() - t0                                  # the interpreter and the CLI's imports
    res, lines = _run(["models", "train", "--config", str(tmp_path / "t.toml")], None)
    assert res.returncode == 0, lines
    assert lines and lines[0][0] < startup + 1.0 + 1.5, (startup, lines)  # 1 s delay, slack for a shared CPU
    gaps = [b[0] - a[0] for a, b in zip(lines, lines[1:])]
    assert max(gaps, default=0) < 4.0, lines                          # every 2 s at least (or per epoch)


def test_data_import_reports_one_line_per_file_on_a_pipe(tmp_path):
    files = [need(SHARED_DATA / "qbot" / f"{s}.csv") for s in ("600519.SH", "000858.SZ", "000002.SZ")]
    res, lines = _run(["data", "import", *map(str, files), "--catalog", str(tmp_path / "cat")], "0")
    assert res.returncode == 0, lines
    assert res.stdout.startswith("imported 3 symbol(s)")
    text = [ln for _, ln in lines]
    assert all(ln.startswith("data import: ") for ln in text), text
    for f in files:
        assert sum(f"; read {f.name}: " in ln for ln in text) == 1, text
    assert sum("; wrote " in ln for ln in text) == 3
    assert text[-1] == text[-1].split(";")[0] and text[-1].endswith(", done") and "6/6 (100%)" in text[-1]

"""Installed from its wheel (not editable), tradeloop takes one top-level name and leaves a user's own modules alone.

A strategy beside the user's ``data.py``, ``risk.py`` and ``models/`` package imports all three and
tradeloop, and runs a backtest through the installed ``tradeloop`` command. Real processes: the
wheel is built by pip from a copy of the source, installed into a fresh venv; that venv reads
the third-party dependencies from this test's environment (a .pth line), so nothing is downloaded.
"""
from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STRATEGY = '''
from pathlib import Path

import data      # the user's data.py, beside this file
import models    # the user's models/ package
import risk      # the user's risk.py

from tradeloop import Param, Strategy


class UserStrategy(Strategy):
    """Buys data.lot() shares once, if the user's risk.ALLOW says so."""

    size = Param(1, "lots per entry")

    def on_bar(self, ctx, bar):
        if risk.ALLOW and not ctx.position(bar.symbol) and not ctx.open_orders():
            ctx.buy(bar.symbol, self.size * data.lot())

    def on_stop(self, ctx):
        Path("used.json").write_text(__import__("json").dumps(
            {"data": data.__file__, "risk": risk.__file__, "models": models.__file__, "name": models.NAME}))
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with tradeloop installed from a freshly built wheel; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    top_skip = {".venv", ".git", "build", "dist", "runs", "catalog", ".pytest_cache"}
    shutil.copytree(ROOT, src, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (Path(folder) == ROOT and n in top_skip)])
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("tradeloop-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True)
    target = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    # dependencies (numpy, polars, ...) from this environment; appended after the venv's own site-packages
    (target / "zz_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def site_packages(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3*/site-packages"))


def test_site_packages_holds_no_top_level_name_of_ours_but_tradeloop(installed):
    ours = {"engine", "data", "models", "risk", "brokers", "strategies", "tradeloop"}
    names = {p.name.removesuffix(".py") for p in site_packages(installed).iterdir()}
    assert names & ours == {"tradeloop"}
    record = next(site_packages(installed).glob("tradeloop-*.dist-info")) / "RECORD"
    tops = {line.split("/", 1)[0] for line in record.read_text().splitlines()}
    assert {t for t in tops if not t.startswith(("tradeloop", ".."))} == set()


def test_a_strategy_beside_the_users_own_data_risk_and_models_runs(installed, tmp_path):
    user = tmp_path / "project"
    (user / "models").mkdir(parents=True)
    (user / "data.py").write_text("def lot():\n    return 3\n")
    (user / "risk.py").write_text("ALLOW = True\n")
    (user / "models" / "__init__.py").write_text("NAME = 'the user models'\n")
    (user / "strategy.py").write_text(STRATEGY)
    rows = ["date,open,high,low,close,volume"]
    rows += [f"2024-01-{d:02d},{10 + d},{11 + d},{9 + d},{10.5 + d},1000" for d in range(2, 30)]
    (user / "prices.csv").write_text("\n".join(rows) + "\n")

    r = subprocess.run([str(installed / "bin" / "tradeloop"), "backtest", "strategy.py:UserStrategy", "--data",
                        "prices.csv", "--out", "run", "--quiet"], cwd=user, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    used = json.loads((user / "used.json").read_text())
    assert used == {"data": str(user / "data.py"), "risk": str(user / "risk.py"),
                    "models": str(user / "models" / "__init__.py"), "name": "the user models"}
    manifest = json.loads((user / "run" / "manifest.json").read_text())
    assert manifest["strategy"]["class"].endswith(":UserStrategy")
    import polars as pl
    f = pl.read_parquet(user / "run" / "fills.parquet")
    assert f["qty"].to_list() == [3.0]

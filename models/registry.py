"""Model registry: ``ROOT/NAME/VERSION/`` folders, a ``latest`` pointer, checked loading.

A version folder holds::

    weights.pt        state_dict of the network (torch runtimes; read without torch by the AMX one)
    net.json          network kind and sizes
    model.onnx        fp32 ONNX export (onnx-cpu)           model.int8.onnx  its dynamic int8 twin
    features.json     the feature spec (and its hash)       train_config.json  how it was trained
    metadata.json     input shape, label, training window, data file hashes, metrics, created-at,
                      net_settings (what the native runtime needs beside the weights); ``kind``:
                      "classifier" (absent in versions saved before forecasters) or "forecaster"
    engines/          TensorRT engines (and INT8 calibration tables) built for this version, per GPU

A forecaster version (``models/kline/``) holds ``weights.pt`` (tokenizer and transformer state
dicts), ``kline.json`` (sizes and sampling settings), ``features.json`` (its ``KlineSpec``),
``train_config.json`` and ``metadata.json`` (kind, outputs, seed, training data span and files,
metrics); it loads on ``torch-cpu`` or ``torch-cuda`` as a :class:`LoadedForecaster`, whose
``predict(windows [n, lookback, 6]) -> [n, len(outputs)]``. Both loaded kinds have ``ref``,
``spec``, ``kind``, ``outputs`` and ``predict``.

``NAME@VERSION``, ``NAME@latest`` and ``NAME`` (= latest) resolve. ``load`` checks that the
stored model fits what the caller will feed it (feature spec hash, lookback, input width) and
that the runtime can run here, and refuses a mismatch with a message listing every difference.
Versions are written to a temporary folder and renamed into place, so a reader never sees a
half-written version; ``latest`` is replaced atomically.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from tradeloop.models._deps import require_torch
from tradeloop.models.errors import CompatibilityError, FeatureError, RegistryError
from tradeloop.models.features import N_FEATURES, FeatureSpec
from tradeloop.models.tick_features import spec_from_dict
from tradeloop.models.nets import NetConfig
from tradeloop.models.runtime import ONNX_FILES, RUNTIMES, Runtime, open_runtime, unavailable_reason

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VERSION_RE = re.compile(r"^v\d{4,}$")
LATEST = "latest"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model version: ``name@version``."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME@VERSION`` / ``NAME@latest`` / ``NAME`` -> (name, version or 'latest')."""
    name, _, version = str(ref).partition("@")
    version = version or LATEST
    if not NAME_RE.match(name):
        raise RegistryError(f"bad model reference {ref!r}: expected NAME@VERSION or NAME@latest "
                            "(NAME: letters, digits, '_', '-', '.')")
    if version != LATEST and not VERSION_RE.match(version):
        raise RegistryError(f"bad model version {version!r} in {ref!r}: versions look like v0001, or use 'latest'")
    return name, version


@dataclass
class ModelInfo:
    """Everything stored about one version, read from its JSON files."""

    ref: ModelRef
    path: Path
    spec_dict: dict[str, Any]
    net: NetConfig | None          # None for a forecaster (its sizes are in kline.json)
    metadata: dict[str, Any]
    train_config: dict[str, Any]

    @property
    def kind(self) -> str:
        """"classifier" or "forecaster"."""
        return str(self.metadata.get("kind", "classifier"))

    @property
    def spec(self) -> Any:
        """The stored feature spec (CompatibilityError if this code cannot build it)."""
        try:
            if self.spec_dict.get("kind") == "kline":
                from tradeloop.models.kline.spec import KlineSpec

                return KlineSpec.from_dict(self.spec_dict)
            return spec_from_dict(self.spec_dict)  # type: ignore[return-value]
        except FeatureError as e:
            raise CompatibilityError(f"model {self.ref}: {e}") from None

    @property
    def lookback(self) -> int:
        """Window length the network takes."""
        return int(self.metadata["input"]["lookback"])

    @property
    def n_features(self) -> int:
        """Input width the network takes."""
        return int(self.metadata["input"]["n_features"])

    def load_state(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(numpy weights, net settings) for the native runtime, read without torch; None for a
        version saved without ``net_settings`` (before they were recorded, or not a ConvTransformer)."""
        settings = self.metadata.get("net_settings")
        if settings is None:
            return None
        from tradeloop.models.state_file import read_state_dict

        return read_state_dict(self.path / "weights.pt"), settings

    def load_net(self) -> Any:
        """The torch network with its trained weights (imports torch)."""
        torch = require_torch(f"loading the weights of {self.ref}")

        from tradeloop.models.nets import build_net

        weights = self.path / "weights.pt"
        if not weights.is_file():
            raise RegistryError(f"model {self.ref}: {weights} is missing")
        if self.net is None:
            raise CompatibilityError(f"model {self.ref} is a {self.kind}, not a classifier network")
        net = build_net(self.net, self.n_features, self.lookback)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net.eval()


@dataclass
class LoadedModel:
    """A checked model version opened in a runtime: ``predict(windows) -> logits``."""

    info: ModelInfo
    runtime: Runtime
    kind = "classifier"
    outputs = ("logit_down", "logit_up")

    @property
    def ref(self) -> ModelRef:
        """Which version this is."""
        return self.info.ref

    @property
    def spec(self) -> FeatureSpec:
        """Its feature spec."""
        return self.info.spec

    def predict(self, windows: Any) -> Any:
        """Logits float32 [batch, 2]."""
        return self.runtime.predict(windows)

    @property
    def on_device(self) -> bool:
        """True when the runtime takes windows already on its device (``predict_device``)."""
        return hasattr(self.runtime, "predict_device")

    def predict_device(self, windows: Any) -> Any:
        """Logits float32 [batch, 2] of windows already on the runtime's device (torch-cuda)."""
        return self.runtime.predict_device(windows)

    def __str__(self) -> str:
        return f"{self.info.ref} ({self.runtime.name})"


FORECAST_RUNTIMES = ("torch-cpu", "torch-cuda")


@dataclass
class LoadedForecaster:
    """A checked forecaster version on a device: ``predict(windows [n, lookback, 6]) -> [n, len(outputs)]``
    (expected return over the horizon, its q10/q50/q90, P(up)); ``forecaster.forecast`` gives sample paths."""

    info: ModelInfo
    runtime: Any            # models.kline.forecast.ForecastRuntime
    kind = "forecaster"
    on_device = False       # windows come from the host (the predictor's bar rings)

    @property
    def ref(self) -> ModelRef:
        """Which version this is."""
        return self.info.ref

    @property
    def spec(self) -> Any:
        """Its KlineSpec (lookback, the 6 raw bar fields)."""
        return self.info.spec

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the columns ``predict`` returns."""
        return tuple(self.info.metadata["outputs"])

    @property
    def forecaster(self) -> Any:
        """The models.kline.forecast.Forecaster (sample paths: ``forecast(history, horizon, samples, seed)``)."""
        return self.runtime.forecaster

    @property
    def horizon(self) -> int:
        """Bars ahead the outputs forecast."""
        return int(self.runtime.forecaster.settings.horizon)

    def predict(self, windows: Any) -> Any:
        """float32 [n, len(outputs)]; each window's result does not depend on its batch-mates."""
        return self.runtime.predict(windows)

    def __str__(self) -> str:
        return f"{self.info.ref} ({self.runtime.name})"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _read_json(path: Path, ref: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"model {ref}: {path.name} is missing from {path.parent}") from None
    except json.JSONDecodeError as e:
        raise RegistryError(f"model {ref}: {path} is not valid JSON ({e})") from None


def runtime_agreement(net: Any, folder: Path, windows: Any, lookback: int, limit: int = 4096) -> dict[str, Any]:
    """Each ONNX runtime in ``folder`` against torch fp32 on the same windows: max |diff|, same class."""
    import numpy as np
    import torch

    x = np.ascontiguousarray(windows[:limit], dtype=np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    out: dict[str, Any] = {"windows": len(x)}
    for name, file in ONNX_FILES.items():
        if (folder / file).is_file():
            got = open_runtime(name, lookback=lookback, n_features=x.shape[2], folder=folder).predict(x)
            out[name] = {"max_abs_diff": float(np.abs(got - ref).max()),
                         "same_class": float((got.argmax(1) == ref.argmax(1)).mean())}
    return out


@dataclass
class _NewVersion:
    """A version being written: its temporary folder, and its reference once placed."""

    folder: Path
    ref: ModelRef | None = None


class Registry:
    """Models under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- lookup ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Model names with at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and VERSION_RE.match(p.name)),
                      key=lambda v: int(v[1:]))

    def resolve(self, ref: str | ModelRef) -> ModelRef:
        """The concrete version a reference names (``latest`` read from the pointer)."""
        if isinstance(ref, ModelRef):
            name, version = ref.name, ref.version
        else:
            name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"no model named {name!r} in {self.root} (models there: {known})")
        if version == LATEST:
            pointer = self.root / name / LATEST
            version = pointer.read_text().strip() if pointer.is_file() else versions[-1]
        if version not in versions:
            raise RegistryError(f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        return ModelRef(name, version)

    def path(self, ref: str | ModelRef) -> Path:
        """Folder of a version."""
        r = self.resolve(ref)
        return self.root / r.name / r.version

    def info(self, ref: str | ModelRef) -> ModelInfo:
        """What is stored about a version."""
        r = self.resolve(ref)
        p = self.root / r.name / r.version
        feats = _read_json(p / "features.json", str(r))
        meta = _read_json(p / "metadata.json", str(r))
        net = None if meta.get("kind") == "forecaster" else NetConfig.from_dict(_read_json(p / "net.json", str(r)))
        return ModelInfo(r, p, feats["spec"], net, meta, _read_json(p / "train_config.json", str(r)))

    # -- writing ---------------------------------------------------------------------------
    def save(self, name: str, net: Any, spec: FeatureSpec, net_config: NetConfig, *,
             train_config: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
             onnx: bool = True, int8: bool = True, set_latest: bool = True,
             check_windows: Any = None) -> ModelRef:
        """Store a trained network as the next version of ``name``; its reference.

        With ``check_windows`` (real windows, e.g. the test split) the ONNX exports are run on
        them before the version is placed, and their agreement with torch fp32 is recorded in
        the metadata as ``runtime_check``.
        """
        torch = require_torch("saving a model")
        with self._new_version(name, set_latest) as new:
            tmp = new.folder
            net = net.to("cpu", torch.float32).eval()
            torch.save(net.state_dict(), tmp / "weights.pt")
            _write_json(tmp / "net.json", net_config.to_dict())
            _write_json(tmp / "features.json", {"spec": spec.to_dict(), "hash": spec.hash})
            _write_json(tmp / "train_config.json", train_config or {})
            files = ["weights.pt"]
            if onnx:
                from tradeloop.models.export import export_onnx, quantize_int8

                export_onnx(net, tmp / ONNX_FILES["onnx-cpu"], spec.lookback, spec.n_features)
                files.append(ONNX_FILES["onnx-cpu"])
                if int8:
                    quantize_int8(tmp / ONNX_FILES["onnx-cpu"], tmp / ONNX_FILES["onnx-cpu-int8"])
                    files.append(ONNX_FILES["onnx-cpu-int8"])
            from tradeloop.models.nets.conv_transformer import ConvTransformer

            if isinstance(net, ConvTransformer):  # what the native runtime needs beside the weights
                from tradeloop.models.runtime.native.net import settings_of

                metadata = {**(metadata or {}), "net_settings": settings_of(net)}
            meta = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "input": {"lookback": spec.lookback, "n_features": spec.n_features}, "classes": 2,
                    "feature_hash": spec.hash, "files": files, "torch": torch.__version__,
                    **(metadata or {})}
            if onnx and check_windows is not None and len(check_windows):
                meta["runtime_check"] = runtime_agreement(net, tmp, check_windows, spec.lookback)
            _write_json(tmp / "metadata.json", meta)
        return new.ref

    def save_forecaster(self, name: str, forecaster: Any, *, train_config: dict[str, Any] | None = None,
                        metadata: dict[str, Any] | None = None, set_latest: bool = True) -> ModelRef:
        """Store a trained ``models.kline.forecast.Forecaster`` as the next version of ``name`` (atomically)."""
        torch = require_torch("saving a forecaster")
        from tradeloop.models.kline.config import ModelSizes
        from tradeloop.models.kline.spec import OUTPUTS

        with self._new_version(name, set_latest) as new:
            tmp = new.folder
            tok, net, spec = forecaster.tokenizer, forecaster.transformer, forecaster.spec
            state = {"tokenizer": {k: v.detach().cpu() for k, v in tok.state_dict().items()},
                     "transformer": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
            torch.save(state, tmp / "weights.pt")
            sizes = ModelSizes(tok.cfg, net.cfg)
            _write_json(tmp / "kline.json", {"sizes": sizes.to_dict(), "settings": forecaster.settings.to_dict()})
            _write_json(tmp / "features.json", {"spec": spec.to_dict(), "hash": spec.hash})
            _write_json(tmp / "train_config.json", train_config or {})
            params = sum(p.numel() for p in tok.parameters()) + sum(p.numel() for p in net.parameters())
            meta = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "kind": "forecaster",
                    "input": {"lookback": spec.lookback, "n_features": spec.n_features},
                    "outputs": list(OUTPUTS), "feature_hash": spec.hash, "files": ["weights.pt", "kline.json"],
                    "torch": torch.__version__, "seed": forecaster.settings.seed,
                    "sizes": {**sizes.to_dict(), "parameters": int(params)},
                    "forecast": forecaster.settings.to_dict(), **(metadata or {})}
            _write_json(tmp / "metadata.json", meta)
        return new.ref

    @contextlib.contextmanager
    def _new_version(self, name: str, set_latest: bool) -> Iterator[_NewVersion]:
        """A temporary folder to write a version into; on success it becomes the next version of
        ``name`` in one rename (its ``ref``), on any failure it is removed: never half a version."""
        if not NAME_RE.match(name):
            raise RegistryError(f"bad model name {name!r}: use letters, digits, '_', '-', '.'")
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        new = _NewVersion(Path(tempfile.mkdtemp(prefix=".tmp-", dir=base)))
        try:
            yield new
            new.ref = self._place(base, new.folder)
        except BaseException:
            shutil.rmtree(new.folder, ignore_errors=True)
            raise
        if set_latest:
            self.set_latest(str(new.ref))

    def _place(self, base: Path, tmp: Path) -> ModelRef:
        """Rename the finished temporary folder to the next free version number."""
        for _ in range(1000):
            versions = self.versions(base.name)
            n = int(versions[-1][1:]) + 1 if versions else 1
            target = base / f"v{n:04d}"
            try:
                os.rename(tmp, target)
                return ModelRef(base.name, target.name)
            except OSError:
                if not target.exists():
                    raise
        raise RegistryError(f"could not allocate a version folder under {base}")

    def set_latest(self, ref: str | ModelRef) -> ModelRef:
        """Point ``NAME@latest`` at this version."""
        r = self.resolve(ref)
        pointer = self.root / r.name / LATEST
        tmp = pointer.with_name(f".{LATEST}.{os.getpid()}")
        tmp.write_text(r.version + "\n")
        os.replace(tmp, pointer)
        return r

    # -- loading ---------------------------------------------------------------------------
    def check(self, info: ModelInfo, runtime: str, spec: FeatureSpec | None = None,
              lookback: int | None = None, n_features: int | None = None) -> list[str]:
        """Every way the stored model does not fit the request (empty: compatible)."""
        problems: list[str] = []
        stored: FeatureSpec | None = None
        try:
            stored = info.spec
        except CompatibilityError as e:
            problems.append(str(e).split(": ", 1)[-1])
        recorded = info.metadata.get("feature_hash")
        if stored is not None and recorded is not None and stored.hash != recorded:
            problems.append(f"feature spec hash {stored.hash} does not match the one recorded at training "
                            f"({recorded}): features.json was edited")
        if spec is not None and stored is not None and spec.hash != stored.hash:
            a, b = stored.to_dict(), spec.to_dict()
            diffs = [f"{k} {a.get(k)!r} (model) vs {b.get(k)!r} (expected)" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k) and k != "names"]
            problems.append(f"feature spec hash {stored.hash} (model) vs {spec.hash} (expected): {'; '.join(diffs)}")
        if lookback is not None and lookback != info.lookback:
            problems.append(f"lookback {info.lookback} (model) vs {lookback} (expected)")
        if n_features is not None and n_features != info.n_features:
            problems.append(f"input width {info.n_features} features (model) vs {n_features} (expected)")
        if info.kind == "forecaster":
            if runtime not in FORECAST_RUNTIMES:
                problems.append(f"runtime {runtime!r} cannot run a forecaster; choose one of "
                                f"{', '.join(FORECAST_RUNTIMES)}")
            elif unavailable_reason(runtime):
                problems.append(f"runtime {runtime} is unavailable here: {unavailable_reason(runtime)}")
            if not (info.path / "weights.pt").is_file():
                problems.append("the forecaster's weights.pt is missing")
        elif runtime not in RUNTIMES:
            problems.append(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        else:
            why = unavailable_reason(runtime)
            if why:
                problems.append(f"runtime {runtime} is unavailable here: {why}")
            need = ONNX_FILES.get(runtime, "weights.pt")
            if not (info.path / need).is_file():
                problems.append(f"runtime {runtime} needs {need}, which this version does not have")
        return problems

    def load(self, ref: str | ModelRef, runtime: str = "onnx-cpu", *, spec: FeatureSpec | None = None,
             lookback: int | None = None, n_features: int | None = None, threads: int = 1,
             **options: Any) -> LoadedModel | LoadedForecaster:
        """Open a version in ``runtime`` after checking it fits (CompatibilityError listing what differs).

        ``n_features`` None: the width the stored feature spec gives (16 for bar features, 6 for a
        forecaster). A forecaster loads as a :class:`LoadedForecaster` (``torch-cpu`` / ``torch-cuda``)."""
        info = self.info(ref)
        if n_features is None:
            try:
                n_features = info.spec.n_features
            except CompatibilityError:
                n_features = N_FEATURES
        problems = self.check(info, runtime, spec, lookback, n_features)
        if problems:
            raise CompatibilityError(f"model {info.ref} cannot be loaded: " + "; ".join(problems))
        if info.kind == "forecaster":
            return LoadedForecaster(info, _open_forecaster(info, runtime, threads))
        if runtime == "tensorrt" and options.get("precision") == "int8":
            from tradeloop.models.calibration import training_windows

            options.setdefault("calibration", lambda: training_windows(info))
        rt = open_runtime(runtime, lookback=info.lookback, n_features=info.n_features, folder=info.path,
                          net=info.load_net, state=info.load_state, threads=threads, **options)
        return LoadedModel(info, rt)


def _open_forecaster(info: ModelInfo, runtime: str, threads: int) -> Any:
    """The ForecastRuntime of a checked forecaster version (imports torch)."""
    torch = require_torch(f"loading the forecaster {info.ref}")
    from tradeloop.models.kline.config import ModelSizes
    from tradeloop.models.kline.forecast import ForecastRuntime, ForecastSettings, Forecaster
    from tradeloop.models.kline.tokenizer import KlineTokenizer
    from tradeloop.models.kline.transformer import KlineTransformer

    cfg = _read_json(info.path / "kline.json", str(info.ref))
    try:
        sizes = ModelSizes.from_dict({"tokenizer": cfg["sizes"]["tokenizer"], "transformer": cfg["sizes"]["transformer"]})
        settings = ForecastSettings(**cfg["settings"])
    except (KeyError, TypeError) as e:
        raise CompatibilityError(f"model {info.ref}: kline.json is not this code's ({e})") from None
    state = torch.load(info.path / "weights.pt", map_location="cpu", weights_only=True)
    tok = KlineTokenizer(sizes.tokenizer)
    tok.load_state_dict(state["tokenizer"])
    net = KlineTransformer(sizes.transformer, tok.vocab)
    net.load_state_dict(state["transformer"])
    if runtime == "torch-cpu":
        torch.set_num_threads(max(1, int(threads)))
    device = "cuda" if runtime == "torch-cuda" else "cpu"
    return ForecastRuntime(Forecaster(tok, net, info.spec, settings, device=device), runtime, threads)

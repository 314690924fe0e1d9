"""Training: ``train(config) -> "NAME@VERSION"``, the function the CLI calls.

Windows of features are split by time: training [train_start, train_end), validation
[train_end, val_end) after it, test [val_end, test_end) after that; no split's labels read a bar
of the next split. AdamW with a warm-up + cosine learning-rate schedule, early stopping on the
validation loss (the best epoch's weights are kept), AMP on CUDA (bf16 where supported, else
fp16 with a gradient scaler), optional quantization-aware fine-tuning of the linear layers
(``qat``). Seeds are fixed: on the CPU a rerun with the same thread count gives bit-identical
weights (tested). Test accuracy is reported next to two naive baselines: the training split's
majority class, and "the next move has the sign of the last h-bar move".
"""
from __future__ import annotations

import copy
import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import BarSeries

from tradeloop.models._deps import require_torch
from tradeloop.models.dataset import Samples, SeriesFeatures, require, split_samples
from tradeloop.models.errors import TrainingError
from tradeloop.models.features import FeatureSpec
from tradeloop.models.nets import NetConfig


def check_config_keys(cls: type, d: dict[str, Any], required: tuple[str, ...], what: str) -> None:
    """A TrainingError naming any key of ``d`` that ``cls`` (a dataclass) lacks, or a required key it misses."""
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise TrainingError(f"{what}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(cls.__dataclass_fields__)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise TrainingError(f"{what}: missing {', '.join(missing)}")


@dataclass
class TrainConfig:
    """Everything that decides a trained model (stored with it as train_config.json)."""

    name: str
    data: list[str]
    train_end: str
    val_end: str
    train_start: str | None = None
    test_end: str | None = None
    symbols: list[str] | None = None
    registry: str = "runs/models"
    horizon: int = 5
    threshold: float = 0.0
    features: dict[str, Any] = field(default_factory=dict)
    net: dict[str, Any] = field(default_factory=lambda: {"kind": "conv_transformer", "sizes": {}})
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    qat: bool = False
    qat_epochs: int = 2
    qat_lr_scale: float = 0.1
    threads: int | None = None
    progress: bool = True
    onnx: bool = True
    set_latest: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (TOML/JSON), naming unknown keys."""
        check_config_keys(cls, d, ("name", "data", "train_end", "val_end"), "train config")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class FitResult:
    """A trained network and what is known about it."""

    net: Any
    spec: FeatureSpec
    net_config: NetConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    check_windows: np.ndarray


def config_date(date: str | None, what: str, config: str = "train config") -> int | None:
    """ISO date/time -> int64 ns (naive, as the loaders keep exchange wall time); a TrainingError names
    ``config`` and the key ``what`` when it is not a date."""
    if date is None:
        return None
    try:
        return int(np.datetime64(str(date), "ns").astype(np.int64))
    except ValueError:
        raise TrainingError(f"{config}: {what} {date!r} is not a date (use YYYY-MM-DD)") from None


def _validate(cfg: TrainConfig) -> tuple[int | None, int, int, int | None]:
    if not cfg.data:
        raise TrainingError("train config: data lists no bar files")
    if cfg.symbols is not None and len(cfg.symbols) != len(cfg.data):
        raise TrainingError(f"train config: {len(cfg.symbols)} symbols for {len(cfg.data)} data files")
    for name in ("epochs", "batch_size", "patience", "horizon"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TrainingError(f"train config: {name} must be an integer >= 1, got {v!r}")
    if cfg.qat and cfg.qat_epochs < 1:
        raise TrainingError("train config: qat needs qat_epochs >= 1")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise TrainingError(f"train config: device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    t0, t1 = config_date(cfg.train_start, "train_start"), config_date(cfg.train_end, "train_end")
    t2, t3 = config_date(cfg.val_end, "val_end"), config_date(cfg.test_end, "test_end")
    order = [(n, t) for n, t in (("train_start", t0), ("train_end", t1), ("val_end", t2), ("test_end", t3))
             if t is not None]
    for (na, a), (nb, b) in itertools.pairwise(order):
        if not a < b:
            raise TrainingError(f"train config: {na} must be before {nb} (the validation split lies after "
                                "training, the test split after validation)")
    return t0, t1, t2, t3  # type: ignore[return-value]


def load_series(cfg: TrainConfig) -> list[BarSeries]:
    """The configured bar files, loaded and checked."""
    out = []
    for i, path in enumerate(cfg.data):
        if not Path(path).is_file():
            raise TrainingError(f"train config: data file {path} does not exist")
        out.append(load_bars(path, cfg.symbols[i] if cfg.symbols else None))
    return out


def _device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"train config: device {cfg.device!r} but torch {torch.__version__} sees no CUDA GPU")
    return cfg.device


class _Evaluator:
    """Loss, accuracy and predictions of a network over a split, in eval mode."""

    def __init__(self, device: str, batch: int = 2048) -> None:
        self.device, self.batch = device, batch

    def __call__(self, net: Any, s: Samples) -> tuple[float, float, np.ndarray]:
        import torch
        import torch.nn.functional as F

        net.eval()
        preds, total = [], 0.0
        with torch.no_grad():
            for a in range(0, len(s), self.batch):
                x = torch.from_numpy(s.x[a:a + self.batch]).to(self.device)
                y = torch.from_numpy(s.y[a:a + self.batch]).to(self.device)
                logits = net(x).float()
                total += float(F.cross_entropy(logits, y, reduction="sum"))
                preds.append(logits.argmax(1).cpu().numpy())
        p = np.concatenate(preds) if preds else np.empty(0, np.int64)
        n = max(len(s), 1)
        return total / n, float((p == s.y).mean()) if len(s) else float("nan"), p


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)


ProgressFn = Callable[..., None]   # progress(done, total, info=None): steps of the phase, an epoch's line


class _Callback:
    """The rich-Progress methods ``_epochs`` uses, reported to a plain ``progress(done, total, info)`` callable.

    models/ cannot use engine.telemetry: the command line passes its LazyProgress here (a bar on a
    terminal, one line per epoch and every few seconds on a pipe); without one and with stderr not a
    terminal, :class:`_Lines` writes one plain line per epoch itself.
    """

    def __init__(self, fn: ProgressFn) -> None:
        self.fn = fn
        self.tasks: dict[int, list[Any]] = {}

    def __enter__(self) -> "_Callback":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, info: str = "") -> int:
        self.tasks[len(self.tasks)] = [description, 0, total]
        self.fn(0, total, f"{description}: starting")
        return len(self.tasks) - 1

    def advance(self, task: int) -> None:
        t = self.tasks[task]
        t[1] += 1
        self.fn(t[1], t[2])

    def update(self, task: int, info: str | None = None, completed: int | None = None) -> None:
        t = self.tasks[task]
        if completed is not None:
            t[1] = completed
        self.fn(t[1], t[2], None if info is None else f"{t[0]} {info}")


class _Lines:
    """``progress(done, total, info)`` writing one plain line on stderr per new ``info`` (per epoch)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, info: str | None = None) -> None:
        if info is None:
            return
        pct = f" ({done / total:.0%})" if total else ""
        try:
            print(f"models train: {done:,}/{total:,}{pct} {time.perf_counter() - self.t0:.0f}s; {info}",
                  file=sys.stderr, flush=True)
        except (ValueError, OSError):
            pass


def _reporter(enabled: bool, progress: ProgressFn | None) -> Any:
    """What ``_epochs`` reports to: the caller's callback, plain lines on a pipe, else a rich bar."""
    if progress is not None:
        return _Callback(progress)
    if enabled:
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty:
            return _Callback(_Lines())
    return _progress(enabled)


def _schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _epochs(net: Any, cfg: TrainConfig, train: Samples, val: Samples, device: str, lr: float, epochs: int,
            phase: str, progress: Any, history: list[dict[str, float]], patience: int) -> tuple[float, dict]:
    """Train ``epochs`` epochs with early stopping; (best val loss, best state_dict)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(cfg.seed + len(history))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train) / cfg.batch_size)
    total = steps * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, max(1, int(cfg.warmup_frac * total))))
    cuda = device.startswith("cuda")
    amp_dtype = None
    if cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    evaluate = _Evaluator(device)
    best_loss, best_state, bad = math.inf, copy.deepcopy(net.state_dict()), 0
    task = progress.add_task(f"{phase} {cfg.name}", total=total, info="")
    for epoch in range(epochs):
        net.train()
        perm = rng.permutation(len(train))
        run_loss = 0.0
        for a in range(0, len(train), cfg.batch_size):
            idx = np.sort(perm[a:a + cfg.batch_size])
            x = torch.from_numpy(train.x[idx]).to(device, non_blocking=True)
            y = torch.from_numpy(train.y[idx]).to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            run_loss += float(loss.detach()) * len(idx)
            progress.advance(task)
        val_loss, val_acc, _ = evaluate(net, val)
        history.append({"phase": phase, "epoch": epoch, "train_loss": run_loss / len(train),
                        "val_loss": val_loss, "val_accuracy": val_acc})
        progress.update(task, info=f"epoch {epoch + 1}/{epochs}: val loss {val_loss:.4f} acc {val_acc:.3f}")
        if val_loss < best_loss:
            best_loss, best_state, bad = val_loss, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                progress.update(task, completed=total)
                break
    return best_loss, best_state


def fit(cfg: TrainConfig, series: list[BarSeries] | None = None, *, progress: ProgressFn | None = None) -> FitResult:
    """Train a network as configured; nothing is written (``train`` stores the result).

    ``progress(done, total, info=None)``, when given, is called after every step (``done`` of
    ``total`` steps of the phase) and with an ``info`` line per epoch; it replaces the rich bar.
    """
    torch = require_torch("training")

    t0, t1, t2, t3 = _validate(cfg)
    spec = FeatureSpec(**cfg.features)
    net_config = NetConfig.from_dict(cfg.net)
    series = series if series is not None else load_series(cfg)
    items = [SeriesFeatures.of(s, spec) for s in series]
    train = split_samples(items, spec, cfg.horizon, cfg.threshold, t0, t1)
    val = split_samples(items, spec, cfg.horizon, cfg.threshold, t1, t2)
    test = split_samples(items, spec, cfg.horizon, cfg.threshold, t2, t3) if t3 is not None else None
    hint = (f"each series needs {spec.min_bars} bars of history before a window is full, "
            f"plus {cfg.horizon} bars for a label; widen the dates or add data")
    require(train, "training", max(cfg.batch_size // 4, 8), hint)
    require(val, "validation", 4, hint)
    if len(np.unique(train.y)) < 2:
        raise TrainingError("the training split has labels of one class only; lower the threshold or add data")

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.use_deterministic_algorithms(True, warn_only=True)
        # torch's RNG, thread count and determinism flags are process-wide: trainings are reproducible
        # one per process (every executor's default); two on threads of one process would share them
        torch.manual_seed(cfg.seed)
        device = _device(cfg)
        from tradeloop.models.nets import build_net

        net = build_net(net_config, spec.n_features, spec.lookback)
        net.norm_in.fit(torch.from_numpy(train.x))
        net = net.to(device)
        history: list[dict[str, float]] = []
        with _reporter(cfg.progress, progress) as reporter:
            _, state = _epochs(net, cfg, train, val, device, cfg.lr, cfg.epochs, "train", reporter, history,
                               cfg.patience)
            net.load_state_dict(state)
            if cfg.qat:
                from tradeloop.models.quant import finish_qat, start_qat

                handles = start_qat(net)
                _, qstate = _epochs(net, cfg, train, val, device, cfg.lr * cfg.qat_lr_scale, cfg.qat_epochs,
                                    "qat", reporter, history, cfg.qat_epochs)
                net.load_state_dict(qstate)
                finish_qat(net, handles)
        net = net.to("cpu").eval()
        metrics = _metrics(net, train, val, test, cfg, history)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
    check = (test if test is not None and len(test) else val).x
    return FitResult(net, spec, net_config, metrics, history, check)


def _metrics(net: Any, train: Samples, val: Samples, test: Samples | None, cfg: TrainConfig,
             history: list[dict[str, float]]) -> dict[str, Any]:
    """Accuracies of the trained network and of the naive baselines on each split."""
    evaluate = _Evaluator("cpu")
    majority = int(train.y.mean() >= 0.5)
    out: dict[str, Any] = {"epochs_run": len(history), "majority_class": majority}
    for name, s in (("train", train), ("val", val), ("test", test)):
        if s is None or not len(s):
            continue
        loss, acc, _ = evaluate(net, s)
        out[name] = {"n": len(s), "loss": loss, "accuracy": acc, "up_share": s.balance,
                     "baseline_majority": float((s.y == majority).mean()),
                     "baseline_previous_sign": float((s.prev_sign == s.y).mean())}
    return out


def _report(ref: str, metrics: dict[str, Any]) -> None:
    """Print test (else validation) accuracy next to the baselines."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{ref}: accuracy vs naive baselines")
    for col in ("split", "n", "model", "majority class", "previous sign", "up share"):
        t.add_column(col)
    for name in ("train", "val", "test"):
        m = metrics.get(name)
        if m:
            t.add_row(name, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['baseline_majority']:.3f}",
                      f"{m['baseline_previous_sign']:.3f}", f"{m['up_share']:.3f}")
    Console().print(t)


def train(config: TrainConfig | dict[str, Any], series: list[BarSeries] | None = None, *,
          metadata: dict[str, Any] | None = None, progress: ProgressFn | None = None) -> str:
    """Train, store the model in the registry, and return its reference ``NAME@VERSION``.

    ``metadata`` adds keys to the stored metadata.json (a walk-forward names its window there);
    ``progress`` is :func:`fit`'s callback (the command line passes its LazyProgress).
    """
    from tradeloop.models.registry import Registry

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    if series is None:
        _validate(cfg)
        if progress is not None:
            progress(0, 0, "loading data")
        series = load_series(cfg)
    result = fit(cfg, series, progress=progress)
    meta = {"training_window": {"train_start": cfg.train_start, "train_end": cfg.train_end,
                                "val_end": cfg.val_end, "test_end": cfg.test_end},
            "label": {"horizon": cfg.horizon, "threshold": cfg.threshold},
            "data": [{"symbol": s.symbol, "path": s.source, "rows": len(s),
                      "sha256": file_sha256(s.source) if s.source and Path(s.source).is_file() else None}
                     for s in series],
            "metrics": result.metrics, "history": result.history, **(metadata or {})}
    ref = Registry(cfg.registry).save(cfg.name, result.net, result.spec, result.net_config,
                                      train_config=cfg.to_dict(), metadata=meta, onnx=cfg.onnx,
                                      set_latest=cfg.set_latest, check_windows=result.check_windows)
    if cfg.progress:
        _report(str(ref), result.metrics)
    return str(ref)

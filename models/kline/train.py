"""Training the forecaster: the tokenizer first, then the transformer on its tokens; into the registry.

Data: windows of ``lookback + extra`` bars cut from each input series inside [train_start,
train_end) (every ``stride`` bars); each is normalised with the statistics of its first
``lookback`` bars (the context), so the last ``extra`` targets are in the frame a forecast will
use and read nothing the context statistics do not. The tokenizer trains on the normalised bars
of these windows (plus ``tokenizer_data``, other files such as the US daily ones, cut to the same
span); the transformer on their token sequences (next-token cross-entropy, coarse then fine
given the true coarse). AdamW, warm-up + cosine, fixed seeds and thread count: a CPU rerun gives
the same weights. With ``val_end`` the span [train_end, val_end) is the validation split: its
losses and tokenizer errors are reported (no early stopping: steps are fixed).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import BarSeries

from tradeloop.models.errors import TrainingError
from tradeloop.models.kline.config import ModelSizes
from tradeloop.models.kline.spec import FIELDS, KlineSpec, bar_matrix
from tradeloop.models.train import check_config_keys, config_date

Progress = Callable[[str], None]


@dataclass
class KlineTrainConfig:
    """Everything that decides a trained forecaster (stored as train_config.json)."""

    name: str
    data: list[str]
    train_end: str
    train_start: str | None = None
    val_end: str | None = None
    test_end: str | None = None          # accepted for the walk-forward's per-window keys; unused
    symbols: list[str] | None = None
    tokenizer_data: list[str] = field(default_factory=list)
    registry: str = "runs/models"
    kind: str = "kline"
    size: Any = "tiny"
    lookback: int = 64
    extra: int = 8
    stride: int = 2
    tokenizer_steps: int = 600
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = 1
    device: str = "auto"
    horizon: int = 5
    samples: int = 16
    temperature: float = 1.0
    top_p: float = 0.9
    progress: bool = False
    set_latest: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KlineTrainConfig:
        """Build from a mapping (TOML/JSON), naming unknown or missing keys; checks every value."""
        check_config_keys(cls, d, ("name", "data", "train_end"), "kline train config")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """TrainingError naming the first bad key."""
        if self.kind != "kline":
            raise TrainingError(f"kline train config: kind must be 'kline', got {self.kind!r}")
        for k in ("lookback", "extra", "stride", "tokenizer_steps", "steps", "batch_size", "horizon", "samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k.endswith("steps") else 1):
                raise TrainingError(f"kline train config: {k} must be a positive integer, got {v!r}")
        if not (self.lr > 0 and self.temperature >= 0 and 0 < self.top_p <= 1):
            raise TrainingError("kline train config: need lr > 0, temperature >= 0, 0 < top_p <= 1")
        sizes = ModelSizes.from_dict(self.size)
        if self.lookback + max(self.extra, self.horizon) > sizes.transformer.max_len:
            raise TrainingError(f"kline train config: lookback + extra/horizon exceed max_len "
                                f"{sizes.transformer.max_len}")
        KlineSpec(self.lookback)
        spans = [_ts(self.train_start, "train_start"), _ts(self.train_end, "train_end"), _ts(self.val_end, "val_end")]
        if spans[0] is not None and spans[0] >= spans[1]:
            raise TrainingError("kline train config: train_start must be before train_end")
        if spans[2] is not None and spans[2] <= spans[1]:
            raise TrainingError("kline train config: val_end must be after train_end")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _ts(date: str | None, what: str) -> int | None:
    return config_date(date, what, "kline train config")


# -- data --------------------------------------------------------------------------------------

def cut_windows(series: list[BarSeries], lo: int | None, hi: int | None, length: int, stride: int) -> np.ndarray:
    """float64 [n, length, 6]: raw windows inside [lo, hi) of every series, every ``stride`` bars; invalid ones dropped."""
    out = []
    for s in series:
        keep = np.ones(len(s), bool)
        if lo is not None:
            keep &= s.ts >= lo
        if hi is not None:
            keep &= s.ts < hi
        bars = bar_matrix(s)[keep]
        if len(bars) < length:
            continue
        w = np.lib.stride_tricks.sliding_window_view(bars, (length, 6))[::stride, 0]
        ok = np.isfinite(w).all(axis=(1, 2)) & (w[..., :4] > 0).all(axis=(1, 2)) & (w[..., 4:] >= 0).all(axis=(1, 2))
        out.append(np.ascontiguousarray(w[ok]))
    return np.concatenate(out) if out else np.empty((0, length, 6))


def normalised(windows: np.ndarray, lookback: int, clip: float) -> tuple[np.ndarray, Any]:
    """float32 z-scores of windows [n, T, 6] in the frame of their first ``lookback`` bars, and that frame."""
    from tradeloop.models.kline.normalize import normalize, stats_of

    stats = stats_of(windows[:, :lookback])
    return normalize(windows, stats, clip), stats


# -- training ----------------------------------------------------------------------------------

def _schedule(step: int, total: int, warm: int) -> float:
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"kline train config: device {name!r} but torch {torch.__version__} sees no CUDA GPU")
    return name


def train_tokenizer(bars: np.ndarray, sizes: ModelSizes, steps: int, *, lr: float = 2e-3, batch: int = 2048,
                    seed: int = 0, device: str = "cpu", progress: Progress | None = None) -> Any:
    """A KlineTokenizer trained on normalised bars [N, 6] for ``steps`` steps."""
    import torch

    from tradeloop.models.kline.tokenizer import KlineTokenizer

    torch.manual_seed(seed)
    tok = KlineTokenizer(sizes.tokenizer).to(device)
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _schedule(i, steps, max(1, steps // 20)))
    x = torch.from_numpy(np.ascontiguousarray(bars, np.float32)).to(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    tok.train()
    for i in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g).to(device)
        out = tok(x[idx])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        if progress and (i + 1) % max(1, steps // 5) == 0:
            progress(f"tokenizer step {i + 1}/{steps}: mse {out['mse'].item():.4f} "
                     f"(coarse only {out['mse_coarse'].item():.4f})")
    return tok.eval()


def encode_all(tok: Any, z: np.ndarray, device: str = "cpu", chunk: int = 65536) -> np.ndarray:
    """int64 ids [..., 2] of normalised bars [..., 6]."""
    import torch

    flat = z.reshape(-1, 6)
    out = [tok.encode(torch.from_numpy(np.ascontiguousarray(flat[a:a + chunk])).to(device)).cpu().numpy()
           for a in range(0, len(flat), chunk)]
    return (np.concatenate(out) if out else np.empty((0, 2), np.int64)).reshape(z.shape[:-1] + (2,))


def tokenizer_report(tok: Any, windows: np.ndarray, lookback: int, clip: float, device: str = "cpu") -> dict[str, Any]:
    """Reconstruction error per field (RMSE in z units; mean |error| as % of the close for prices,
    of the value itself for volume/amount) and the codes' bits per bar, over the windows' context bars."""
    import torch

    from tradeloop.models.kline.normalize import denormalize
    from tradeloop.models.kline.tokenizer import code_entropy

    if not len(windows):
        return {"n": 0}
    ctx = windows[:, :lookback]
    z, stats = normalised(ctx, lookback, clip)
    ids = encode_all(tok, z, device)
    with torch.inference_mode():
        rz = np.concatenate([tok.decode(torch.from_numpy(ids[a:a + 4096]).to(device)).cpu().numpy()
                             for a in range(0, len(ids), 4096)]).astype(np.float64)
    rec = denormalize(rz, stats)
    err = np.abs(rec - ctx)
    close = ctx[..., 3]
    per = {}
    for j, f in enumerate(FIELDS):
        rel = err[..., j] / close if j < 4 else err[..., j] / np.maximum(ctx[..., j], 1e-9)
        per[f] = {"rmse_z": float(np.sqrt(((rz[..., j] - z[..., j]) ** 2).mean())),
                  "mae_pct": float(100 * np.median(rel) if j >= 4 else 100 * rel.mean())}
    return {"n_bars": int(ids.shape[0] * ids.shape[1]), "fields": per,
            "bits_per_bar_nominal": tok.cfg.bits, "entropy": code_entropy(ids, tok.vocab)}


def train_transformer(ids: np.ndarray, sizes: ModelSizes, vocab: tuple[int, int], steps: int, *, lr: float,
                      batch: int, seed: int = 0, device: str = "cpu", progress: Progress | None = None) -> Any:
    """A KlineTransformer trained on token sequences [n, T, 2] for ``steps`` steps."""
    import torch

    from tradeloop.models.kline.transformer import KlineTransformer

    torch.manual_seed(seed)
    net = KlineTransformer(sizes.transformer, vocab).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _schedule(i, steps, max(1, steps // 20)))
    x = torch.from_numpy(ids).to(device)
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    net.train()
    for i in range(steps):
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g).to(device)
        lc, lf = net.loss(x[idx])
        opt.zero_grad(set_to_none=True)
        (lc + lf).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress and (i + 1) % max(1, steps // 5) == 0:
            progress(f"transformer step {i + 1}/{steps}: coarse CE {lc.item():.3f} fine CE {lf.item():.3f} nats")
    return net.eval()


def sequence_loss(net: Any, ids: np.ndarray, device: str = "cpu", batch: int = 256) -> dict[str, float]:
    """Mean teacher-forced cross-entropy (nats) of the coarse and the fine token over sequences [n, T, 2]."""
    import torch

    if not len(ids):
        return {}
    c = f = 0.0
    with torch.inference_mode():
        for a in range(0, len(ids), batch):
            x = torch.from_numpy(ids[a:a + batch]).to(device)
            lc, lf = net.loss(x)
            c += lc.item() * len(x)
            f += lf.item() * len(x)
    return {"coarse_ce": c / len(ids), "fine_ce": f / len(ids), "n": int(len(ids))}


def fit(cfg: KlineTrainConfig, series: list[BarSeries], tokenizer_series: list[BarSeries] = (), *,
        progress: Progress | None = None) -> tuple[Any, dict[str, Any]]:
    """(Forecaster, metrics) trained as ``cfg`` says on ``series`` (+ ``tokenizer_series`` for the tokenizer)."""
    import torch

    from tradeloop.models.kline.forecast import ForecastSettings, Forecaster

    threads = cfg.threads
    if threads:
        torch.set_num_threads(int(threads))
    device = _device(cfg.device)
    sizes = ModelSizes.from_dict(cfg.size)
    spec = KlineSpec(cfg.lookback)
    lo, hi, ve = _ts(cfg.train_start, "train_start"), _ts(cfg.train_end, "train_end"), _ts(cfg.val_end, "val_end")
    T = cfg.lookback + cfg.extra
    t0 = time.perf_counter()
    train_w = cut_windows(series, lo, hi, T, cfg.stride)
    if len(train_w) < 8:
        raise TrainingError(f"kline training: only {len(train_w)} windows of {T} bars in the training span "
                            "(more data, an earlier train_start, or a shorter lookback)")
    val_w = cut_windows(series, hi - (cfg.lookback - 1) * _bar_ns(series), ve, T, cfg.stride) if ve else np.empty((0, T, 6))
    z, _ = normalised(train_w, cfg.lookback, spec.clip)
    tok_bars = [z.reshape(-1, 6)]
    extra_w = cut_windows(list(tokenizer_series), lo, hi, cfg.lookback, cfg.stride) if tokenizer_series else None
    if extra_w is not None and len(extra_w):
        tok_bars.append(normalised(extra_w, cfg.lookback, spec.clip)[0].reshape(-1, 6))
    tok = train_tokenizer(np.concatenate(tok_bars), sizes, cfg.tokenizer_steps, seed=cfg.seed, device=device,
                          progress=progress)
    t1 = time.perf_counter()
    ids = encode_all(tok, z, device)
    net = train_transformer(ids, sizes, tok.vocab, cfg.steps, lr=cfg.lr, batch=cfg.batch_size, seed=cfg.seed,
                            device=device, progress=progress)
    t2 = time.perf_counter()
    metrics: dict[str, Any] = {
        "windows": {"train": int(len(train_w)), "val": int(len(val_w)),
                    "tokenizer_extra": int(len(extra_w)) if extra_w is not None else 0},
        "tokenizer": {"train": tokenizer_report(tok, train_w[:4000], cfg.lookback, spec.clip, device)},
        "transformer": {"train": sequence_loss(net, ids[:4000], device)},
        "seconds": {"tokenizer": round(t1 - t0, 2), "transformer": round(t2 - t1, 2)}}
    if len(val_w):
        metrics["tokenizer"]["val"] = tokenizer_report(tok, val_w, cfg.lookback, spec.clip, device)
        zv, _ = normalised(val_w, cfg.lookback, spec.clip)
        metrics["transformer"]["val"] = sequence_loss(net, encode_all(tok, zv, device), device)
    settings = ForecastSettings(cfg.horizon, cfg.samples, cfg.temperature, cfg.top_p, cfg.seed)
    return Forecaster(tok.cpu(), net.cpu(), spec, settings), metrics


def _bar_ns(series: list[BarSeries]) -> int:
    """The median bar step (ns) of the first series with two bars (so validation windows get their context)."""
    for s in series:
        if len(s) > 1:
            return int(np.median(np.diff(s.ts)))
    return 0


def train_forecaster(config: KlineTrainConfig | dict[str, Any], series: list[BarSeries] | None = None, *,
                     metadata: dict[str, Any] | None = None, progress: Progress | None = None) -> str:
    """Train a forecaster and store it as the next version of ``config.name``; its ``NAME@VERSION``."""
    from tradeloop.models.registry import Registry

    cfg = config if isinstance(config, KlineTrainConfig) else KlineTrainConfig.from_dict(dict(config))
    cfg.validate()
    series = series if series is not None else [load_bars(p) for p in cfg.data]
    tok_series = [load_bars(p) for p in cfg.tokenizer_data]
    fc, metrics = fit(cfg, series, tok_series, progress=progress)
    inputs = []
    for p in list(cfg.data) + list(cfg.tokenizer_data):
        try:
            inputs.append({"path": str(p), "sha256": file_sha256(p)})
        except (OSError, ValueError):   # series given in memory (tests, walk-forward catalogs): no file
            inputs.append({"path": str(p), "sha256": None})
    meta = {"training_data": {"train_start": cfg.train_start, "train_end": cfg.train_end, "val_end": cfg.val_end,
                              "symbols": [s.symbol for s in series], "files": inputs},
            "metrics": metrics, **(metadata or {})}
    ref = Registry(cfg.registry).save_forecaster(cfg.name, fc, train_config=cfg.to_dict(), metadata=meta,
                                                 set_latest=cfg.set_latest)
    return str(ref)

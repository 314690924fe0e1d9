"""Native kernels for the bf16 runtime, compiled on first use: AVX-512 attention and LayerNorm
(``kernels.c``) and the whole Conv1d+Transformer forward pass on AMX tiles (``amx_net.c``, used
through ``net.py``).

The sources are built with the system C compiler (``$CC``, else ``cc``) and ``-march=native`` into
``$XDG_CACHE_HOME/tradeloop/native/`` (``~/.cache`` without it), keyed by the sources, the compiler's
version and this CPU's flags, then loaded with ctypes (calls release the GIL, so batch threads run
in parallel). A build is written to a temporary name and renamed, so processes that start at once
never load a half-written library. Without a compiler or without AVX-512, :func:`load_kernels`
returns ``None`` and :func:`unavailable_reason` says why; callers then keep their torch path.
Where ``cpu.max_isa()`` caps the CPU (``TRADELOOP_MAX_CPU_ISA=avx2``), the instruction sets above
the cap are switched off in the build (``-mno-avx512f``, ``-mno-amx-tile``, ...), so the library is
the one an AVX2 CPU gets: it reports no AVX-512 and no AMX, and the callers take their other paths.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tradeloop.models.runtime.cpu import cap_note, cpu_flags, raw_cpu_flags

SOURCES = tuple(Path(__file__).with_name(n) for n in ("kernels.c", "amx_net.c"))
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
# cpuinfo flag -> the compiler option that switches it off where cpu.max_isa() drops it
# (-mno-avx512f takes every AVX-512 extension with it; AMX and AVX-VNNI are separate).
_NO_ISA = {"avx2": "-mno-avx2", "avx_vnni": "-mno-avxvnni", "avx512f": "-mno-avx512f", "avx512_vnni": "-mno-avx512vnni",
           "avx512_bf16": "-mno-avx512bf16", "amx_tile": "-mno-amx-tile", "amx_bf16": "-mno-amx-bf16",
           "amx_int8": "-mno-amx-int8"}
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


@dataclass(frozen=True)
class NativeKernels:
    """The loaded library; every method takes raw data pointers of contiguous buffers."""

    lib: ctypes.CDLL
    path: Path

    def attention_bf16(self, qkv: int, out: int, batch: int, length: int, heads: int, head_dim: int) -> bool:
        """softmax(q k^T) v per head from qkv [B, T, 3, H, hd] into out [B, T, H*hd]; False: shape unsupported."""
        return self.lib.tl_attention_bf16(qkv, out, batch, length, heads, head_dim) == 0

    def layer_norm_bf16(self, x: int, weight: int, bias: int, out: int, rows: int, width: int, eps: float) -> bool:
        """LayerNorm of [rows, width] bf16 with fp32 weight/bias; False: width unsupported."""
        return self.lib.tl_layernorm_bf16(x, weight, bias, out, rows, width, eps) == 0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tradeloop" / "native"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


def _flags() -> tuple[str, ...]:
    """The compiler flags: FLAGS, and an -mno-* for each instruction set the CPU cap drops."""
    dropped = raw_cpu_flags() - cpu_flags()
    return (*FLAGS, *(opt for flag, opt in _NO_ISA.items() if flag in dropped))


def _build_key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    h = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES))
    for part in (version, " ".join(_flags()), " ".join(sorted(cpu_flags()))):
        h.update(part.encode())
    return h.hexdigest()[:16]


def _build(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *_flags(), "-o", tmp, *map(str, SOURCES), "-lm"], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode:
            raise OSError(f"{cc} failed on {', '.join(s.name for s in SOURCES)}: {done.stderr.strip()[-400:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> tuple[NativeKernels | None, str | None]:
    cc = _compiler()
    if cc is None:
        return None, f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    try:
        path = cache_dir() / f"kernels-{_build_key(cc)}.so"
        if not path.exists():
            _build(cc, path)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged cached build (disk full, killed copy): build it again, once
            _build(cc, path)
            lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:  # RuntimeError: no home folder to cache in
        return None, f"could not build or load the native kernels: {e}"
    if not lib.tl_available():
        return None, f"this CPU has no AVX-512{cap_note()}"
    lib.tl_attention_bf16.argtypes = [_PTR, _PTR, _I64, _I64, _I64, _I64]
    lib.tl_layernorm_bf16.argtypes = [_PTR, _PTR, _PTR, _PTR, _I64, _I64, ctypes.c_float]
    lib.tl_net_new.argtypes = [_PTR, _PTR, _PTR, _PTR]
    lib.tl_net_forward.argtypes = [_PTR, _PTR, _I64, _PTR]
    lib.tl_net_free.argtypes = [_PTR]
    lib.tl_net_free.restype = None
    return NativeKernels(lib, path), None


@functools.cache
def _loaded() -> tuple[NativeKernels | None, str | None]:
    # One build and one dlopen per process: the library is immutable once loaded.
    return _load()


def load_kernels() -> NativeKernels | None:
    """The kernels, built if needed; None where they cannot run here (see :func:`unavailable_reason`)."""
    return _loaded()[0]


def unavailable_reason() -> str | None:
    """Why :func:`load_kernels` returns None on this machine, or None when the kernels load."""
    return _loaded()[1]

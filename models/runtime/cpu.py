"""What this CPU can do natively (bf16 / int8 matrix units), read from ``/proc/cpuinfo`` flags.

The flags can be capped, so that a machine with AVX-512 or AMX proves the paths an AVX2 CPU
takes: ``TRADELOOP_MAX_CPU_ISA`` (else ``ONEDNN_MAX_CPU_ISA``, the variable that caps oneDNN
inside torch) names an instruction-set level in oneDNN's words (``avx2``, ``avx512_core``,
``avx512_core_vnni``, ``avx512_core_bf16``, ``avx512_core_amx``, ...). Every flag above that
level is then dropped from :func:`cpu_flags`, so the runtimes, the native kernels' build and
their refusal reasons all act as on such a CPU. :func:`capped_env` gives the variables that
cap every library this project uses (oneDNN, numba, the native kernels) for a subprocess.
ONNX Runtime has no such cap: its int8 kernels follow the real CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
CAP_ENV = "TRADELOOP_MAX_CPU_ISA"
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"

# oneDNN's ISA levels, lowest first (``avx10_1_512`` is its newer name for ``avx512_core_fp16``,
# ``avx10_1_512_amx`` for ``avx512_core_amx``).
ISA_LEVELS = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni",
              "avx512_core_bf16", "avx10_1_512", "avx10_1_512_amx", "avx10_1_512_amx_fp16", "all")
_ALIASES = {"avx512_core_fp16": "avx10_1_512", "avx512_core_amx": "avx10_1_512_amx",
            "avx512_core_amx_fp16": "avx10_1_512_amx_fp16", "default": "all"}
# The lowest level that may use each flag; any other avx512* flag needs avx512_core, and a flag
# named nowhere (sse, aes, ...) is never dropped.
_FLAG_LEVEL = {"avx": "avx", "f16c": "avx", "avx2": "avx2", "fma": "avx2", "avx_vnni": "avx2_vnni",
               "avx_vnni_int8": "avx2_vnni_2", "avx_ne_convert": "avx2_vnni_2", "avx512_vnni": "avx512_core_vnni",
               "avx512_bf16": "avx512_core_bf16", "avx512_fp16": "avx10_1_512", "amx_tile": "avx10_1_512_amx",
               "amx_bf16": "avx10_1_512_amx", "amx_int8": "avx10_1_512_amx", "amx_fp16": "avx10_1_512_amx_fp16",
               "amx_complex": "avx10_1_512_amx_fp16"}
# numba's (LLVM's) CPU name for a level, so jitted code is capped too.
_NUMBA_CPU = {"sse41": "nehalem", "avx": "sandybridge", "avx2": "haswell", "avx2_vnni": "alderlake",
              "avx2_vnni_2": "alderlake", "avx512_core": "skylake-avx512", "avx512_core_vnni": "cascadelake",
              "avx512_core_bf16": "cooperlake", "avx10_1_512": "sapphirerapids", "avx10_1_512_amx": "sapphirerapids",
              "avx10_1_512_amx_fp16": "sapphirerapids"}


def _level(name: str) -> str | None:
    n = name.strip().lower()
    n = _ALIASES.get(n, n)
    return n if n in ISA_LEVELS else None


def max_isa() -> str | None:
    """The level the flags are capped at (``TRADELOOP_MAX_CPU_ISA``, else ``ONEDNN_MAX_CPU_ISA``), or None.

    An unknown ``TRADELOOP_MAX_CPU_ISA`` is a ValueError; an unknown ``ONEDNN_MAX_CPU_ISA`` is
    ignored, as oneDNN ignores it."""
    ours = os.environ.get(CAP_ENV, "").strip()
    if ours:
        level = _level(ours)
        if level is None:
            raise ValueError(f"{CAP_ENV}={ours!r} is not an instruction-set level; "
                             f"choose one of {', '.join(ISA_LEVELS)}")
        return None if level == "all" else level
    level = _level(os.environ.get(ONEDNN_ENV, ""))
    return None if level in (None, "all") else level


def cap_flags(flags: frozenset[str], isa: str | None) -> frozenset[str]:
    """``flags`` less every flag above level ``isa`` (None: all of them)."""
    if isa is None:
        return flags
    top = ISA_LEVELS.index(_level(isa) or "all")

    def allowed(flag: str) -> bool:
        level = _FLAG_LEVEL.get(flag, "avx512_core" if flag.startswith("avx512") else None)
        return level is None or ISA_LEVELS.index(level) <= top

    return frozenset(f for f in flags if allowed(f))


def cap_note() -> str:
    """`` (capped at LEVEL by VAR)`` while a cap is set, else empty: for refusal reasons."""
    isa = max_isa()
    if isa is None:
        return ""
    var = CAP_ENV if os.environ.get(CAP_ENV, "").strip() else ONEDNN_ENV
    return f" (capped at {isa} by {var})"


def raw_cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags as the file lists them (empty where it is absent, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (``model name`` in the file), for benchmark reports; the platform's guess elsewhere."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags this process may use: :func:`raw_cpu_flags` less those above :func:`max_isa`."""
    return cap_flags(raw_cpu_flags(cpuinfo), max_isa())


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when bf16 matmuls run on AMX or AVX-512 BF16 units rather than being emulated."""
    have = cpu_flags() if flags is None else flags
    return any(f in have for f in BF16_FLAGS)


def native_int8(flags: frozenset[str] | None = None) -> bool:
    """True when u8 x s8 products are summed in 32 bits (VNNI, AMX-INT8). Without them ONNX
    Runtime's u8s8 kernel (AVX2, AVX-512 without VNNI) adds pairs of products in 16 bits, which
    saturate for 8-bit weights."""
    have = cpu_flags() if flags is None else flags
    return any(f in have for f in INT8_FLAGS)


def capabilities(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """Each matrix-unit flag this module knows about, and AVX2 / AVX-512: present or not (for bench reports)."""
    have = cpu_flags() if flags is None else flags
    return {f: f in have for f in ("avx2", "avx512f", *BF16_FLAGS, *INT8_FLAGS)}


def capped_env(isa: str = "avx2") -> dict[str, str]:
    """Environment variables that make a subprocess act as on a CPU whose top level is ``isa``:
    this module's flags (and so the native kernels), oneDNN inside torch, and numba."""
    level = _level(isa)
    if level is None or level == "all":
        raise ValueError(f"{isa!r} is not an instruction-set level to cap at; "
                         f"choose one of {', '.join(ISA_LEVELS[:-1])}")
    env = {CAP_ENV: level, ONEDNN_ENV: level.upper()}
    if level in _NUMBA_CPU:
        env["NUMBA_CPU_NAME"] = _NUMBA_CPU[level]
    return env

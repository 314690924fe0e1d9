"""What this CPU can do natively (bf16 / int8 matrix units), read from ``/proc/cpuinfo`` flags."""
from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags (empty where the file is absent, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when bf16 matmuls run on AMX or AVX-512 BF16 units rather than being emulated."""
    have = cpu_flags() if flags is None else flags
    return any(f in have for f in BF16_FLAGS)


def capabilities(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """Each matrix-unit flag this module knows about: present or not (for bench reports)."""
    have = cpu_flags() if flags is None else flags
    return {f: f in have for f in (*BF16_FLAGS, *INT8_FLAGS)}

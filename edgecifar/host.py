"""What machine a figure was measured on: training times and latencies mean little without it."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

#: CPU flags (as /proc/cpuinfo spells them) that change int8 kernels, latency ratios and bf16 training speed.
#: int8: VNNI adds int8 dot products (without it, onnxruntime's u8s8 kernels can saturate); bf16: native bfloat16
#: arithmetic (AVX-512 BF16, or AMX tiles) makes mixed_bfloat16 training pay instead of costing 6-8x.
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")
#: Any one of these runs bfloat16 matrix arithmetic in hardware.
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (from /proc/cpuinfo), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def features_in(cpuinfo: str) -> tuple[str, ...]:
    """The :data:`FEATURES` that a /proc/cpuinfo text lists (first ``flags`` line), in table order."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(f for f in FEATURES if f in flags)
    return ()


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """This machine's :data:`FEATURES` (empty where /proc/cpuinfo is absent or lists none)."""
    try:
        return features_in(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ()


def native_bf16(features: tuple[str, ...] | None = None) -> bool:
    """Whether the CPU runs bfloat16 arithmetic natively (else mixed_bfloat16 training is emulated and slow)."""
    return any(f in (cpu_features() if features is None else features) for f in NATIVE_BF16)

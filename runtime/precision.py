"""`precision: auto`: the Keras dtype policy this machine trains fastest in without hurting the model.

Mixed precision computes convolutions and dense layers in 16 bits and keeps the weights, the
softmax output, the loss and the metrics in float32 (hypermodel.py). It pays only where the
hardware computes in 16 bits natively: bfloat16 on CPUs with avx512_bf16 or AMX and on GPUs of
compute capability 8.0 and up, float16 on 7.x (Volta, Turing). Elsewhere it is emulated, slower.

One concern: that choice. It imports backends.py (the GPU's compute capability) and nothing else of ours.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve(requested: str) -> tuple[str, str]:
    """The dtype policy for `requested` (auto or a policy of config.PRECISIONS) and why it was chosen."""
    if requested != "auto":
        return requested, "as configured"
    gpu = gpu_compute_capability()
    if gpu is not None:
        name, (major, minor) = gpu
        where = f"{name}, compute capability {major}.{minor}"
        if major >= 8:
            return "mixed_bfloat16", f"auto: the GPU computes in bfloat16 natively ({where})"
        if major == 7:
            return "mixed_float16", f"auto: the GPU computes in float16 natively, not bfloat16 ({where})"
        return "float32", f"auto: the GPU has no fast 16-bit arithmetic ({where})"
    flag = cpu_bf16_flag()
    if flag:
        return "mixed_bfloat16", f"auto: no GPU; the CPU computes in bfloat16 natively ({flag})"
    return "float32", f"auto: no GPU, and the CPU reports none of {', '.join(CPU_BF16_FLAGS)}"


def cpu_bf16_flag(cpuinfo: str | None = None) -> str | None:
    """The first native-bfloat16 flag this x86 Linux CPU reports, or None (other systems: None)."""
    if cpuinfo is None:
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def gpu_compute_capability() -> tuple[str, tuple[int, int]] | None:
    """The first visible GPU's name and CUDA compute capability, or None without one (the backend's view)."""
    from runtime import backends

    return next(((name, capability) for name, capability in backends.gpus() if capability), None)

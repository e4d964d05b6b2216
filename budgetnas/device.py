"""Device and precision selection."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from budgetnas.choices import DEVICES, PRECISIONS
from budgetnas.errors import UsageError


@dataclass(frozen=True)
class Placement:
    """Where and how a model trains: the torch device and the autocast dtype (None = fp32)."""

    device: torch.device
    precision: str  # "fp32", "bf16" or "fp16" (what actually runs, after "auto" is resolved)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU. Asking for a missing device is an error."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise UsageError("device mps was asked for but Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bf16 kernels (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_placement(device: str = "auto", precision: str = "auto") -> Placement:
    """Resolve ``auto`` settings.

    ``auto`` precision: bf16 autocast on CPUs with native bf16 and on CUDA GPUs that
    support it (fp16 on older GPUs), fp32 elsewhere (emulated bf16 on a CPU is slower
    than fp32, so it is never chosen automatically). ``fp32`` forces full precision.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    if precision == "fp32":
        return Placement(dev, "fp32")
    if precision == "bf16":
        return Placement(dev, "bf16")
    if dev.type == "cuda":
        return Placement(dev, "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if dev.type == "cpu" and cpu_has_native_bf16():
        return Placement(dev, "bf16")
    return Placement(dev, "fp32")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())

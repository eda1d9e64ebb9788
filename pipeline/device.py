"""`device: auto` resolution, shared by training, evaluation and face detection."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; anything else is taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively (AMX tiles or AVX512-BF16), asked of torch's
    own capability checks. Without them oneDNN emulates bf16 and it is many times slower than fp32,
    so `precision: auto` stays fp32 there (docs/speed.md)."""
    capabilities = cpu_capabilities()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


def cpu_capabilities() -> dict:
    """torch's table of this CPU's instruction sets (cpuinfo), {} where this torch has none."""
    get = getattr(torch.cpu, "get_capabilities", None)
    return dict(get()) if get is not None else {}


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    """What a run records about the hardware it trained on (runs/<run>/train.json)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"kind": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported()}
    if device.type == "cpu":
        capabilities = cpu_capabilities()
        return {"kind": "cpu", "name": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                "amx_bf16": bool(capabilities.get("amx_bf16")), "avx512_bf16": bool(capabilities.get("avx512_bf16")),
                "threads": torch.get_num_threads()}
    return {"kind": device.type, "name": device.type}

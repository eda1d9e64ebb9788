"""runs/<run>/train.json: how a run was trained, so a number can be traced to its arithmetic.

A run is trained in one or more *stretches*: the epochs between two starts of `train`. Each
stretch records what `auto` resolved to there and on what (device kind and name, CPU
capability or GPU, precision, memory format, compile, fused Adam, processes and nodes, torch and
CUDA versions). Every epoch adds its wall time and images/s. A resume under other settings
(a CPU run continued on a GPU, fp32 -> bf16) opens a new stretch, and the run's summary says
`mixed`; the report and `python -m pipeline compare` show it (report.trained_label).

The record travels inside checkpoint.pt too (plain lists and dicts, loadable with
weights_only=True), so it always matches the epoch a resumed run continues from.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from pipeline.datasets import write_json_atomic
from pipeline.device import describe_device

RECORD_FILE = "train.json"
# What must match for two stretches to count as trained alike (the rest is bookkeeping).
SETUP_KEYS = ("device", "precision", "memory_format", "compile", "fused_adam", "processes", "nodes")


def _nodes(world_size: int) -> int:
    """Machines in a torchrun job: processes / processes per machine (torchrun sets both)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or world_size)
    return max(1, world_size // max(1, local))


def setup_of(device: torch.device, speed, run, world) -> dict:
    setup = {
        "device": describe_device(device),
        "precision": speed.precision,
        "memory_format": "channels_last" if speed.channels_last else "contiguous",
        "compile": bool(run.compile),
        "fused_adam": bool(speed.fused_adam),
        "processes": world.size,
        "nodes": _nodes(world.size),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }
    if device.type == "cuda":
        setup["tf32"] = bool(run.tf32)
    return setup


def _what(setup: dict) -> dict:
    """The parts of a setup that decide the arithmetic, the device as kind and name."""
    out = {key: setup.get(key) for key in SETUP_KEYS}
    device = setup.get("device") or {}
    out["device"] = f"{device.get('kind')} ({device.get('name')})" if device else None
    return out


def differences(old: dict, new: dict) -> str:
    """'precision fp32 -> bf16, device cpu (Xeon) -> cuda (H100)', or '' when trained alike."""
    a, b = _what(old), _what(new)
    return ", ".join(f"{key} {a[key]} -> {b[key]}" for key in SETUP_KEYS if a[key] != b[key])


class TrainRecord:
    def __init__(self, data: dict):
        self.data = data
        self.pending: dict | None = None  # the stretch opened by start_stretch, kept once it trains an epoch

    @classmethod
    def resume(cls, run_name: str, saved: dict | None, start_epoch: int) -> "TrainRecord":
        """The record of a checkpoint (cut to its epoch), a new one, or for a checkpoint made
        before records existed one whose first stretch says it is unknown."""
        if saved:
            record = cls({**saved, "epochs": [e for e in saved.get("epochs", []) if e["epoch"] <= start_epoch]})
        else:
            stretches = [{"epochs": [1, start_epoch], "unrecorded": True}] if start_epoch else []
            record = cls({"run": run_name, "stretches": stretches, "epochs": []})
        record._summarise()
        return record

    def start_stretch(self, start_epoch: int, device: torch.device, speed, run, world) -> str:
        """Open the stretch that starts after `start_epoch`; returns what changed against the
        last recorded stretch, e.g. 'epochs 1-12 ran with precision fp32 -> bf16' ('' when
        nothing did, or when there is none to compare)."""
        setup = setup_of(device, speed, run, world)
        stretches = self.data["stretches"]
        last = next((s for s in reversed(stretches) if not s.get("unrecorded")), None)
        changed = differences(last, setup) if last else ""
        change = f"epochs {last['epochs'][0]}-{last['epochs'][1]} ran with {changed}" if changed else ""
        # Recorded from its first epoch on: a start with nothing left to train (a finished run
        # given the same or fewer epochs) adds no empty stretch.
        self.pending = {"epochs": [start_epoch + 1, None], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **setup}
        return change

    def add_epoch(self, epoch: int, seconds: float, images_per_s: float) -> None:
        if self.pending is not None:
            self.data["stretches"].append(self.pending)
            self.pending = None
        self.data["epochs"].append({"epoch": epoch, "seconds": round(seconds, 3),
                                    "images_per_s": round(images_per_s, 1)})
        self.data["stretches"][-1]["epochs"][1] = epoch
        self._summarise()

    def _summarise(self) -> None:
        """Top-level fields a person (and the report) reads first."""
        known = [s for s in self.data["stretches"] if not s.get("unrecorded")]
        kinds = {key: sorted({str(_what(s)[key]) for s in known}) for key in ("device", "precision", "memory_format")}
        mixed = any(len(v) > 1 for v in kinds.values()) or len(known) < len(self.data["stretches"])
        self.data["mixed"] = mixed
        for key, values in kinds.items():
            self.data[key] = values[0] if len(values) == 1 else "mixed: " + ", ".join(values)
        timed = self.data["epochs"]
        # The median resists the first epoch's warm-up and a machine busy for a while.
        self.data["seconds_per_epoch"] = round(statistics.median(e["seconds"] for e in timed), 3) if timed else None
        self.data["images_per_s"] = round(statistics.median(e["images_per_s"] for e in timed), 1) if timed else None
        self.data["train_seconds"] = round(sum(e["seconds"] for e in timed), 1)

    def write(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / RECORD_FILE, self.data)

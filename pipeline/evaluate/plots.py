"""Matplotlib figures written atomically (the Agg backend: no display needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_figure(fig: Figure, path: Path | str, dpi: int = 110) -> Path:
    """Save through a temporary name and a rename, then close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def class_histogram_figure(shares: list[float], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(shares)), shares, color="tab:blue")
    ax.axhline(1 / len(shares), color="gray", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(range(len(shares)))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("share of samples")
    ax.set_title(title)
    ax.legend()
    return fig

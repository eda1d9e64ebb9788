"""Matplotlib figures written atomically (the Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.atomic import write_bytes_atomic  # noqa: E402


def save_figure(fig: Figure, path: Path | str, dpi: int = 110) -> Path:
    """Render in memory (the format from the suffix), write atomically, then close the figure."""
    path = Path(path)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=path.suffix.lstrip(".") or None, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
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

"""report: one page a person reads, comparing every run.

    reports/index.md          the page: a metrics table, sample grids side by side, curves
    reports/samples/<run>.png each run's last fixed-noise grid (runs/<run>/samples/final.png)
    reports/figures/*.png     training curves (DVCLive) and class histograms (evaluate)

Markdown plus PNG renders on GitHub, in VS Code and in `dvc plots`-free environments alike.
Runs that are not trained or not evaluated yet still get a row, marked as such, so the page
never hides a run. The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from pathlib import Path

from pipeline.config import Params
from pipeline.datasets import replace_dir
from pipeline.evaluate.plots import plt, save_figure

PAGE = "index.md"
# (metrics.json key, column title, format); the order is the table's.
COLUMNS = [
    ("fid", "FID", ".2f"),
    ("fid_domain", "FID (domain)", ".2f"),
    ("kid", "KID", ".4f"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("mode_coverage", "classes", "d"),
    ("mode_kl", "KL(uniform)", ".3f"),
    ("probe_acc", "probe (D)", ".3f"),
    ("probe_acc_random_d", "probe (random D)", ".3f"),
    ("probe_acc_pixels", "probe (pixels)", ".3f"),
]
CURVES = [("loss_d", "D loss"), ("loss_g", "G loss"), ("d_real", "D(x) real"), ("d_fake", "D(G(z))"),
          ("fid_domain", "FID (domain), during training"), ("mode_coverage", "digit classes covered")]


def read_curves(live_dir: Path) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (steps, values)} from DVCLive's plots/metrics/*.tsv (columns: step, <metric>)."""
    curves = {}
    root = live_dir / "plots" / "metrics"
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        name = tsv.relative_to(root).with_suffix("").as_posix()
        steps, values = [], []
        with open(tsv, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                try:
                    steps.append(float(row["step"]))
                    values.append(float(row[name.rsplit("/", 1)[-1]]))
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed line (e.g. a killed write) loses one point, not the page
        if steps:
            curves[name] = (steps, values)
    return curves


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _curve_figure(runs: dict[str, dict], metric: str, title: str):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, run in runs.items():
        steps, values = run["curves"][metric]
        ax.plot([s + 1 for s in steps], values, label=name, linewidth=1.2,  # step 0 = after epoch 1
                marker="o" if len(steps) <= 50 else None, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def build_report(params: Params, runs_dir: Path | str, out_dir: Path | str) -> Path:
    """Write the report folder for every run in `params.runs`; returns the page's path."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write(params, runs_dir, tmp)
        tmp.chmod(0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / PAGE


def _write(params: Params, runs_dir: Path, out: Path) -> None:
    (out / "samples").mkdir()
    (out / "figures").mkdir()
    runs: dict[str, dict] = {}
    for name, run in params.runs.items():
        folder = runs_dir / name
        runs[name] = {
            "params": run,
            "metrics": _read_json(folder / "metrics.json"),
            "trained": (folder / "generator.pt").is_file(),
            "curves": read_curves(folder / "dvclive"),
            "live": _read_json(folder / "dvclive" / "metrics.json") or {},
            "grid": folder / "samples" / "final.png",
            "histogram": folder / "eval" / "class_histogram.png",
        }

    lines = ["# GAN / DCGAN runs", "",
             f"{len(runs)} runs from params.yaml. FID and KID: lower is better; precision, recall, "
             "classes covered and probe accuracy: higher is better; KL(uniform) of the generated class "
             "histogram: 0 is every digit equally often, 2.30 is one digit only (mode collapse).", "",
             "## Metrics", ""]
    header = ["run", "model", "dataset", "epochs", *(title for _, title, _ in COLUMNS), "G loss", "D loss"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, run in runs.items():
        p = run["params"]
        if run["metrics"] is None:
            status = "not evaluated" if run["trained"] else "not trained"
            cells = [status] + [""] * (len(COLUMNS) - 1)
        else:
            cells = [_cell(run["metrics"].get(key), fmt) for key, _, fmt in COLUMNS]
        losses = [_cell(run["live"].get(key), ".3f") for key in ("loss_g", "loss_d")]
        lines.append("| " + " | ".join([name, p.model, p.dataset, str(p.epochs), *cells, *losses]) + " |")
    evaluated = next((r["metrics"] for r in runs.values() if r["metrics"]), None)
    if evaluated:
        antialias = evaluated.get("fid_antialias")
        resize = "standard FID off (evaluate.inception: false)" if antialias is None else f"antialias={antialias}"
        lines += ["", f"{evaluated.get('fid_num_samples')} generated vs {evaluated.get('fid_num_real')} real test "
                  f"images ({resize}); FID (domain), KID and precision/recall on the MNIST classifier's features "
                  "where the dataset has one, else on Inception's; probe: test accuracy of a linear classifier on "
                  "frozen features (params evaluate.probe_*)."]

    lines += ["", "## Samples (last fixed-noise grid)", ""]
    with_grid = [name for name, run in runs.items() if run["grid"].is_file()]
    if with_grid:
        for name in with_grid:
            shutil.copyfile(runs[name]["grid"], out / "samples" / f"{name}.png")
        lines += ["| " + " | ".join(with_grid) + " |", "|" + "---|" * len(with_grid),
                  "| " + " | ".join(f"![{n}](samples/{n}.png)" for n in with_grid) + " |"]
    else:
        lines.append("No sample grids yet.")

    lines += ["", "## Training curves", ""]
    drawn = 0
    for metric, title in CURVES:
        having = {name: run for name, run in runs.items() if metric in run["curves"]}
        if having:
            save_figure(_curve_figure(having, metric, title), out / "figures" / f"{metric}.png")
            lines += [f"![{title}](figures/{metric}.png)", ""]
            drawn += 1
    if not drawn:
        lines.append("No DVCLive logs yet.")

    histograms = [name for name, run in runs.items() if run["histogram"].is_file()]
    if histograms:
        lines += ["", "## Generated class histograms", ""]
        for name in histograms:
            shutil.copyfile(runs[name]["histogram"], out / "figures" / f"classes-{name}.png")
        lines += ["| " + " | ".join(histograms) + " |", "|" + "---|" * len(histograms),
                  "| " + " | ".join(f"![{n}](figures/classes-{n}.png)" for n in histograms) + " |"]
    (out / PAGE).write_text("\n".join(lines) + "\n")

"""report: one page a person reads, comparing every run, with the noise of every number.

    reports/index.md          the page: metrics with their spreads, the real-data floor, runs
                              grouped over seeds, which differences are beyond noise, sample
                              grids side by side, curves
    reports/samples/<run>.png each run's last fixed-noise grid (runs/<run>/samples/final.png)
    reports/figures/*.png     training curves (DVCLive), fid_domain curves (evaluate), class histograms

Markdown plus PNG renders on GitHub, in VS Code and in `dvc plots`-free environments alike.
Runs that are not trained or not evaluated yet still get a row, marked as such, so the page
never hides a run. The folder is written under a temporary name and renamed into place.
`python -m pipeline compare` prints the same tables in the terminal (`metric_tables`).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import Params, RunParams
from pipeline.datasets import staged_dir
from pipeline.evaluate.names import domain_name
from pipeline.evaluate.plots import plt, save_figure

PAGE = "index.md"
# (metric, its spread's key or None, column title, format); the order is the table's.
QUALITY = [
    ("fid", "fid_std", "FID", ".2f"),
    ("kid", "kid_std", "KID", ".4f"),
    ("precision", None, "precision", ".3f"),
    ("recall", None, "recall", ".3f"),
    ("fid_domain", "fid_domain_std", "FID (domain)", ".2f"),
    ("kid_domain", "kid_domain_std", "KID (domain)", ".4f"),
    ("precision_domain", None, "precision (domain)", ".3f"),
    ("recall_domain", None, "recall (domain)", ".3f"),
    ("mode_coverage", None, "classes", "d"),
    ("mode_kl", None, "KL(uniform)", ".3f"),
]
PROBE = [
    ("probe_acc", "probe_acc_ci95", "probe (D)", ".3f"),
    ("probe_acc_random_d", "probe_acc_random_d_ci95", "probe (random D)", ".3f"),
    ("probe_acc_pixels", "probe_acc_pixels_ci95", "probe (pixels)", ".3f"),
    ("probe_majority_acc", None, "majority class (plain acc.)", ".3f"),
]
# Headline numbers compared between runs of one dataset: (metric, spread, lower is better).
HEADLINES = [("fid", "fid_std", True), ("fid_domain", "fid_domain_std", True), ("kid", "kid_std", True),
             ("kid_domain", "kid_domain_std", True), ("probe_acc", "probe_acc_ci95", False)]
# A difference is "beyond noise" when a two-sided 95% test says so; probe_acc_ci95 is a 95%
# half-width, so dividing by this gives a standard deviation.
CI95_Z = 1.96
CURVES = [("loss_d", "D loss"), ("loss_g", "G loss"), ("d_real", "D(x) real"), ("d_fake", "D(G(z))")]
EVAL_CURVES = [("fid_domain", "FID (domain) over training (evaluate, G snapshots)"),
               ("mode_coverage", "digit classes covered over training")]
SEED_SUFFIX = re.compile(r"[-_.]?(s|seed)\d+$")


def read_curves(live_dir: Path) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (steps, values)} from DVCLive's plots/metrics/*.tsv (columns: step, <metric>)."""
    curves = {}
    root = live_dir / "plots" / "metrics"
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        name = tsv.relative_to(root).with_suffix("").as_posix()
        steps, values = _read_columns(tsv, "step", name.rsplit("/", 1)[-1])
        if steps:
            curves[name] = (steps, values)
    return curves


def read_eval_curve(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (epochs, values)} from evaluate's curve.tsv (columns: epoch, fid_domain, ...)."""
    curves = {}
    for metric, _ in EVAL_CURVES:
        epochs, values = _read_columns(path, "epoch", metric)
        if epochs:
            curves[metric] = (epochs, values)
    return curves


def _read_columns(tsv: Path, x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    if not tsv.is_file():
        return xs, ys
    with open(tsv, newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            try:
                point = float(row[x]), float(row[y])
            except (KeyError, TypeError, ValueError):
                continue  # a malformed or empty cell (e.g. a killed write) loses one point, not the page
            xs.append(point[0])
            ys.append(point[1])
    return xs, ys


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class RunView:
    name: str
    params: RunParams
    metrics: dict | None = None
    protocol: dict = field(default_factory=dict)
    trained: bool = False
    live: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    eval_curves: dict = field(default_factory=dict)
    folder: Path | None = None
    source: str = "workspace"  # or the git revision / DVC experiment it was read from


def collect_runs(params: Params, runs_dir: Path | str) -> dict[str, RunView]:
    """Everything the page shows of each run in params.runs, read from runs/<run>/."""
    runs_dir = Path(runs_dir)
    out = {}
    for name, run in params.runs.items():
        folder = runs_dir / name
        out[name] = RunView(name=name, params=run, metrics=_read_json(folder / "metrics.json"),
                            protocol=_read_json(folder / "eval" / "protocol.json") or {},
                            trained=(folder / "generator.pt").is_file(),
                            live=_read_json(folder / "dvclive" / "metrics.json") or {},
                            curves=read_curves(folder / "dvclive"),
                            eval_curves=read_eval_curve(folder / "curve.tsv"), folder=folder)
    return out


# --------------------------------------------------------------------------- numbers


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cell(value, spread=None, fmt: str = ".3f") -> str:
    """'12.34 ± 0.56', '12.34', or '–' for a null (the notes under the table say why)."""
    if not _finite(value):
        return "–"
    text = format(value, fmt)
    return f"{text} ± {format(spread, fmt)}" if _finite(spread) else text


def seed_groups(runs: dict[str, RunView]) -> dict[str, list[str]]:
    """{group name: run names} for runs whose params are equal up to `seed` (2 or more runs).

    The group is named after its first run with a trailing seed suffix (-s1, _seed2) removed."""
    by_key: dict[str, list[str]] = {}
    for name, run in runs.items():
        key = json.dumps([run.source, run.params.model_dump(exclude={"seed"})], sort_keys=True, default=str)
        by_key.setdefault(key, []).append(name)
    groups = {}
    for names in by_key.values():
        if len(names) >= 2:
            groups[f"{SEED_SUFFIX.sub('', names[0])} ({len(names)} seeds)"] = names
    return groups


@dataclass
class Estimate:
    """One number of one run or seed group, with the standard deviation of its noise."""
    value: float
    sd: float | None
    kind: str  # "sampling" (one run) or "seeds" (a group's mean over seeds)
    n: int = 1  # seeds behind the value


def run_estimate(run: RunView, metric: str, spread: str) -> Estimate | None:
    m = run.metrics or {}
    if not _finite(m.get(metric)):
        return None
    sd = m.get(spread)
    if _finite(sd) and spread.endswith("_ci95"):
        sd = sd / CI95_Z
    return Estimate(float(m[metric]), float(sd) if _finite(sd) else None, "sampling")


def group_estimate(runs: list[RunView], metric: str, spread: str) -> Estimate | None:
    """Mean over seeds, with the standard error of that mean: the std across seeds (which holds
    each run's sampling noise too) over sqrt(n), but never below the runs' own sampling error
    of the mean (two or three seeds can agree by chance)."""
    estimates = [e for e in (run_estimate(r, metric, spread) for r in runs) if e is not None]
    if len(estimates) < 2:
        return None
    values = [e.value for e in estimates]
    n = len(values)
    seed_se = statistics.stdev(values) / math.sqrt(n)
    sampling = [e.sd for e in estimates if e.sd is not None]
    sampling_se = math.sqrt(sum(sd ** 2 for sd in sampling) / len(sampling) / n) if sampling else 0.0
    return Estimate(statistics.mean(values), max(seed_se, sampling_se), "seeds", n)


def compare(a: Estimate, b: Estimate) -> tuple[float, float | None, bool | None]:
    """(a - b, combined noise sd, beyond noise at 95%?); None when a spread is unknown.

    Between seed groups the threshold is Welch's t (a handful of seeds estimates its std
    poorly); between single runs, whose spreads come from thousands of samples, the normal 1.96."""
    if a.sd is None or b.sd is None:
        return a.value - b.value, None, None
    noise = math.sqrt(a.sd ** 2 + b.sd ** 2)
    return a.value - b.value, noise, abs(a.value - b.value) > critical_value(a, b) * noise


def critical_value(a: Estimate, b: Estimate) -> float:
    if a.n < 2 and b.n < 2:
        return CI95_Z
    from scipy.stats import t  # only for seed groups

    # Welch-Satterthwaite degrees of freedom of the difference of two means.
    terms = [(e.sd ** 2, e.n - 1) for e in (a, b) if e.n >= 2]
    df = sum(v for v, _ in terms) ** 2 / sum(v ** 2 / d for v, d in terms) if all(v > 0 for v, _ in terms) else \
        min(d for _, d in terms)
    return float(t.ppf(0.975, max(df, 1.0)))


# --------------------------------------------------------------------------- tables


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _present(columns, metrics: list[dict]) -> list:
    """The columns that at least one run has a number for (an all-empty column is noise)."""
    return [c for c in columns if any(_finite(m.get(c[0])) for m in metrics)] or columns[:1]


def metric_tables(runs: dict[str, RunView]) -> list[str]:
    """Markdown: the quality and probe tables, floors, seed groups and comparisons."""
    evaluated = [r.metrics for r in runs.values() if r.metrics]
    quality, probe = _present(QUALITY, evaluated), _present(PROBE, evaluated)
    lines = ["## Sample quality", ""]
    rows = []
    for name, run in runs.items():
        p = run.params
        if run.metrics is None:
            status = "not evaluated" if run.trained else "not trained"
            cells = [status] + [""] * (len(quality) - 1)
        else:
            cells = [cell(run.metrics.get(k), run.metrics.get(s) if s else None, f) for k, s, _, f in quality]
        losses = [cell(run.live.get(k), fmt=".3f") for k in ("loss_g", "loss_d")]
        rows.append([name, p.model, p.dataset, str(p.epochs), str(p.seed), *cells, *losses])
    rows += _floor_rows(runs, quality)
    lines += _table(["run", "model", "dataset", "epochs", "seed", *(c[2] for c in quality), "G loss", "D loss"], rows)
    lines += ["", _protocol_line(runs), *_null_notes(runs)]

    lines += ["", "## Linear probe on the frozen discriminator", ""]
    rows = []
    for name, run in runs.items():
        m = run.metrics or {}
        rows.append([name, *(cell(m.get(k), m.get(s), f) for k, s, _, f in probe)])
    lines += _table(["run", *(c[2] for c in probe)], rows)
    lines += ["", "Test accuracy ± the half-width of its 95% interval over the test set (balanced accuracy for "
              "CelebA attributes; params evaluate.probe_*). A D whose probe is not beyond the random-D control "
              "learned nothing the architecture does not already give."]

    groups = seed_groups(runs)
    if groups:
        lines += ["", "## Over seeds", "",
                  "Runs that differ only in `seed`: mean ± std across seeds (GAN results swing with the seed; "
                  "Lucic et al. 2018).", ""]
        columns = [(k, s, t, f) for k, s, t, f in [*quality, *probe] if s or k in ("mode_coverage", "mode_kl",
                                                                                  "recall", "recall_domain")]
        columns = _present(columns, evaluated)
        rows = []
        for group, names in groups.items():
            cells = []
            for key, spread, _, fmt in columns:
                values = [runs[n].metrics.get(key) for n in names if runs[n].metrics and _finite(runs[n].metrics.get(key))]
                if len(values) >= 2:
                    cells.append(cell(statistics.mean(values), statistics.stdev(values), ".3f" if fmt == "d" else fmt))
                else:
                    cells.append("–")
            rows.append([group, ", ".join(names), *cells])
        lines += _table(["group", "runs", *(c[2] for c in columns)], rows)

    lines += ["", "## Which differences are beyond noise", ""]
    lines += comparison_lines(runs, groups)
    return lines


def _floor_rows(runs: dict[str, RunView], quality) -> list[list[str]]:
    """One 'real data' row per dataset: the same distances between two disjoint real sets
    (from protocol.json; a git revision has only metrics.json's fid_floor/fid_domain_floor)."""
    rows, seen = [], set()
    for run in runs.values():
        floor = run.protocol.get("floor")
        if not floor and run.metrics and any(_finite(run.metrics.get(k)) for k in ("fid_floor", "fid_domain_floor")):
            floor = {"split": "disjoint real", "num_images": run.metrics.get("num_samples"),
                     "inception": {"fid": run.metrics.get("fid_floor")},
                     "domain": {"fid": run.metrics.get("fid_domain_floor")}}
        if not floor or (run.source, run.params.dataset) in seen:
            continue
        seen.add((run.source, run.params.dataset))
        flat = {key: value for key, value in (floor.get("inception") or {}).items()}
        flat.update({domain_name(key): value for key, value in (floor.get("domain") or {}).items()})
        cells = [cell(flat.get(k), flat.get(s) if s else None, f) for k, s, _, f in quality]
        where = "" if run.source == "workspace" else f" @{run.source}"
        rows.append([f"*real data{where} ({floor.get('num_images')} {floor.get('split')} images)*", "–", run.params.dataset,
                     "–", "–", *cells, "", ""])
    return rows


def _protocol_line(runs: dict[str, RunView]) -> str:
    protocols = {json.dumps({k: v for k, v in r.protocol.items() if k in ("protocol", "generated", "real")},
                            sort_keys=True) for r in runs.values() if r.protocol}
    if not protocols:
        return "No run evaluated yet."
    parts = []
    for text in sorted(protocols):
        p = json.loads(text)
        g, real = p.get("generated", {}), p.get("real", {})
        parts.append(f"protocol {p.get('protocol')}: {g.get('count')} generated (G sampled in {g.get('sample_mode')} "
                     f"mode) vs {real.get('count')} real {real.get('split')} images of {real.get('dataset')}")
    return ("; ".join(parts) + ". FID, KID, precision, recall: Inception features; (domain): the MNIST classifier's "
            "features. ± is the sampling spread (FID: bootstrap over the generated set; KID: over its subsets). The "
            "*real data* row is the same distance between two disjoint sets of real images: the floor a generator "
            "is measured against. Full protocol: runs/<run>/eval/protocol.json.")


def _null_notes(runs: dict[str, RunView]) -> list[str]:
    notes: dict[str, list[str]] = {}
    for name, run in runs.items():
        for metric, why in (run.protocol.get("notes") or {}).items():
            notes.setdefault(f"{metric}: {why}", []).append(name)
    return [f"- Empty `{text.split(':', 1)[0]}` ({', '.join(names)}):{text.split(':', 1)[1]}" for text, names in notes.items()]


def comparison_lines(runs: dict[str, RunView], groups: dict[str, list[str]]) -> list[str]:
    """For each pair of runs (or seed groups) on one dataset and each headline metric: the
    difference, the noise it is judged against, and whether it is beyond noise."""
    units: dict[str, tuple[str, list[RunView]]] = {}
    grouped = {n for names in groups.values() for n in names}
    for group, names in groups.items():
        units[group] = (runs[names[0]].params.dataset, [runs[n] for n in names])
    for name, run in runs.items():
        if name not in grouped:
            units[name] = (run.params.dataset, [run])
    rows = []
    names = list(units)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (dataset_a, runs_a), (dataset_b, runs_b) = units[a], units[b]
            if dataset_a != dataset_b:
                continue
            for metric, spread, lower_better in HEADLINES:
                ea = group_estimate(runs_a, metric, spread) if len(runs_a) > 1 else run_estimate(runs_a[0], metric, spread)
                eb = group_estimate(runs_b, metric, spread) if len(runs_b) > 1 else run_estimate(runs_b[0], metric, spread)
                if ea is None or eb is None:
                    continue
                diff, noise, beyond = compare(ea, eb)
                better = a if (diff < 0) == lower_better else b
                if beyond is None:
                    verdict = "unknown (a spread is missing)"
                elif beyond:
                    verdict = f"**yes**: {better} is better"
                else:
                    verdict = "no: within noise"
                kinds = "seeds" if "seeds" in (ea.kind, eb.kind) else "sampling"
                rows.append([f"{a} vs {b}", metric, f"{ea.value:.4g} vs {eb.value:.4g}",
                             "–" if noise is None else f"{diff:+.4g} (noise sd {noise:.2g}, {kinds})", verdict])
    if not rows:
        return ["No two evaluated runs (or seed groups) of one dataset to compare."]
    return [*_table(["pair", "metric", "values", "difference", "beyond noise (95%)?"], rows), "",
            "Noise: for one run its sampling spread (FID/KID std, probe 95% interval / 1.96), judged at 1.96 sd; "
            "for a seed group the standard error of its mean across seeds (which also holds the training-seed "
            "variation), judged with Welch's t for the few seeds there are. A single "
            "run has no seed spread: a difference between single runs can be beyond sampling noise and still be "
            "the luck of one seed; add seeds (README, Seeds) before calling a model better."]


# --------------------------------------------------------------------------- page


def _curve_figure(curves: dict[str, tuple[list[float], list[float]]], title: str, offset: int = 1):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (steps, values) in curves.items():
        ax.plot([s + offset for s in steps], values, label=name, linewidth=1.2,
                marker="o" if len(steps) <= 50 else None, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def build_report(params: Params, runs_dir: Path | str, out_dir: Path | str) -> Path:
    """Write the report folder for every run in `params.runs`; returns the page's path."""
    with staged_dir(out_dir) as tmp:
        _write(collect_runs(params, runs_dir), tmp)
    return Path(out_dir) / PAGE


def _write(runs: dict[str, RunView], out: Path) -> None:
    (out / "samples").mkdir()
    (out / "figures").mkdir()
    lines = ["# GAN / DCGAN runs", "",
             f"{len(runs)} runs from params.yaml. FID and KID: lower is better; precision, recall, classes covered "
             "and probe accuracy: higher is better; KL(uniform) of the generated class histogram: 0 is every digit "
             "equally often, 2.30 is one digit only (mode collapse).", ""]
    lines += metric_tables(runs)

    lines += ["", "## Samples (last fixed-noise grid)", ""]
    with_grid = [n for n, r in runs.items() if (r.folder / "samples" / "final.png").is_file()]
    if with_grid:
        for name in with_grid:
            shutil.copyfile(runs[name].folder / "samples" / "final.png", out / "samples" / f"{name}.png")
        lines += _table(with_grid, [[f"![{n}](samples/{n}.png)" for n in with_grid]])
    else:
        lines.append("No sample grids yet.")

    lines += ["", "## Training curves", ""]
    drawn = 0
    for source, offset, curves in (("curves", 1, CURVES), ("eval_curves", 0, EVAL_CURVES)):
        for metric, title in curves:  # DVCLive step 0 = after epoch 1; curve.tsv holds epochs
            having = {n: getattr(r, source)[metric] for n, r in runs.items() if metric in getattr(r, source)}
            if having:
                save_figure(_curve_figure(having, title, offset), out / "figures" / f"{metric}.png")
                lines += [f"![{title}](figures/{metric}.png)", ""]
                drawn += 1
    if not drawn:
        lines.append("No training logs yet.")

    histograms = [n for n, r in runs.items() if (r.folder / "eval" / "class_histogram.png").is_file()]
    if histograms:
        lines += ["", "## Generated class histograms", ""]
        for name in histograms:
            shutil.copyfile(runs[name].folder / "eval" / "class_histogram.png", out / "figures" / f"classes-{name}.png")
        lines += _table(histograms, [[f"![{n}](figures/classes-{n}.png)" for n in histograms]])
    (out / PAGE).write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- compare


def resolve_revision(rev: str, repo: Path) -> str:
    """A commit for `rev`: anything git resolves, or the name of a DVC experiment (its ref
    lives under refs/exps/)."""
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                         capture_output=True, text=True)
    if out.returncode == 0:
        return out.stdout.strip()
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.split("\n")
    found = [line.split()[0] for line in refs if line.endswith(f"/{rev}")]
    if len(found) != 1:
        raise ValueError(f"{rev}: not a git revision nor a DVC experiment name (see `dvc exp list`)")
    return found[0]


def collect_runs_at(rev: str, repo: Path | str) -> dict[str, RunView]:
    """Every run of params.yaml at `rev`, with the metrics.json files git holds there
    (metrics are `cache: false`, so commits and DVC experiments carry them)."""
    repo = Path(repo)
    commit = resolve_revision(rev, repo)

    def show(path: str) -> str | None:
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else None

    text = show("params.yaml")
    if text is None:
        raise ValueError(f"{rev}: has no params.yaml")
    params = Params.model_validate(yaml.safe_load(text))
    out = {}
    for name, run in params.runs.items():
        metrics, live = show(f"runs/{name}/metrics.json"), show(f"runs/{name}/dvclive/metrics.json")
        out[f"{name}@{rev}"] = RunView(name=f"{name}@{rev}", params=run, source=rev,
                                       metrics=json.loads(metrics) if metrics else None,
                                       trained=live is not None, live=json.loads(live) if live else {})
    return out


def compare_text(params: Params, runs_dir: Path | str, revisions: list[str], repo: Path | str = ".") -> str:
    """`python -m pipeline compare`: the report's tables for the workspace (no revisions) or
    for the given git revisions / DVC experiments, side by side."""
    runs: dict[str, RunView] = {}
    if not revisions:
        runs = collect_runs(params, runs_dir)
    for rev in revisions:
        runs.update(collect_runs_at(rev, repo))
    return "\n".join(metric_tables(runs)) + "\n"

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
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml
from matplotlib.ticker import FuncFormatter

from pipeline.comparisons import MANY, Estimate, Test, compare, holm, one_sample, pooled_spread, seed_estimate
from pipeline.config import PARAMS_FILE, EvaluateParams, Params, ParamsError, RunParams, seed_group_name
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
    ("probe_vs_random_d", "probe_vs_random_d_ci95", "D − random D (paired)", "+.3f"),
]
# Headline numbers compared between runs of one dataset: (metric, spread, lower is better).
HEADLINES = [("fid", "fid_std", True), ("fid_domain", "fid_domain_std", True), ("kid", "kid_std", True),
             ("kid_domain", "kid_domain_std", True), ("probe_acc", "probe_acc_ci95", False)]
# probe_acc_ci95 is a 95% half-width over 1,000 test-set resamples: dividing by this gives a
# standard error.
CI95_Z = 1.96
# D against its controls, paired on the same test images: (metric, its 95% half-width, control).
CONTROLS = [("probe_vs_random_d", "probe_vs_random_d_ci95", "random D"),
            ("probe_vs_pixels", "probe_vs_pixels_ci95", "pixels")]
CURVES = [("loss_d", "D loss"), ("loss_g", "G loss"), ("d_real", "D(x) real"), ("d_fake", "D(G(z))")]
FID_CURVE_TITLE = "FID (Inception) over training (evaluate, G snapshots)"
EVAL_CURVES = [("fid", FID_CURVE_TITLE),
               ("fid_domain", "FID (domain) over training (evaluate, G snapshots)"),
               ("mode_coverage", "digit classes covered over training")]
TRAINED_ON_NOTE = ("*trained on*: the device kind and the precision it trained at (the run's `precision`, or what "
                   "`auto` resolved to; runs/<run>/train.json, which "
                   "also names the CPU or GPU, memory format, versions and speed); *mixed* when a run was resumed "
                   "under other settings, *?* when it has no record.")


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
    """{metric: (epochs, values)} from evaluate's curve.tsv (columns: epoch, fid, fid_std,
    fid_domain, ...), each metric's bootstrap spread under `<metric>_std` where it has one."""
    curves = {}
    for metric, _ in EVAL_CURVES:
        for column in (metric, f"{metric}_std"):
            epochs, values = _read_columns(path, "epoch", column)
            if epochs:
                curves[column] = (epochs, values)
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
    record: dict = field(default_factory=dict)  # runs/<run>/train.json: how it was trained
    details: dict = field(default_factory=dict)  # runs/<run>/eval/details.json (the probe's resamples)


def trained_label(run: RunView) -> str:
    """'cpu bf16', 'cuda fp32', 'mixed (cpu fp32, cuda bf16)', or '?' for a run without train.json
    (trained before it was written, or not yet)."""
    record = run.record
    if not record:
        return "?"
    stretches = record.get("stretches") or []
    labels = list(dict.fromkeys(
        "?" if s.get("unrecorded") else f"{(s.get('device') or {}).get('kind', '?')} {s.get('precision', '?')}"
        for s in stretches))
    if len(labels) == 1 and not record.get("mixed"):
        return labels[0]
    return f"mixed ({', '.join(labels)})" if labels else "?"


def units_label(runs: list[RunView]) -> str:
    """The label of runs trained alike, else 'mixes <labels>' (a group or a comparison that mixes
    devices or precisions compares them too)."""
    labels = sorted({trained_label(r) for r in runs})
    if len(labels) == 1 and not labels[0].startswith("mixed"):
        return labels[0]
    return "mixes " + " / ".join(labels)


def collect_runs(params: Params, runs_dir: Path | str, leave_out: Iterable[str] = ()) -> dict[str, RunView]:
    """Everything the page shows of each run in params.runs, read from runs/<run>/; the runs of
    `leave_out` get an empty row, as runs not made yet (`python -m pipeline results`: outputs
    older than the checkout)."""
    runs_dir = Path(runs_dir)
    out = {}
    for name, run in params.runs.items():
        if name in leave_out:
            out[name] = RunView(name=name, params=run)  # no folder: nothing of it is read
            continue
        folder = runs_dir / name
        out[name] = RunView(name=name, params=run, metrics=_read_json(folder / "metrics.json"),
                            protocol=_read_json(folder / "eval" / "protocol.json") or {},
                            trained=(folder / "generator.pt").is_file(),
                            live=_read_json(folder / "dvclive" / "metrics.json") or {},
                            curves=read_curves(folder / "dvclive"),
                            eval_curves=read_eval_curve(folder / "curve.tsv"), folder=folder,
                            record=_read_json(folder / "train.json") or {},
                            details=_read_json(folder / "eval" / "details.json") or {})
    return out


# --------------------------------------------------------------------------- numbers


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cell(value, spread=None, fmt: str = ".3f") -> str:
    """'12.34 ± 0.56', '12.34', or '–' for a null (the notes under the table say why)."""
    if not _finite(value):
        return "–"
    text = format(value, fmt)
    return f"{text} ± {format(spread, fmt.lstrip('+'))}" if _finite(spread) else text


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
            groups[f"{seed_group_name(names[0])} ({len(names)} seeds)"] = names
    return groups


def spread_draws(run: RunView, spread: str) -> int:
    """How many resamples the run's spread was estimated from: FID's bootstrap std from
    `evaluate.fid_bootstrap` draws (protocol.json, else the default), everything else from many."""
    if not spread.startswith(("fid_std", "fid_domain_std")):
        return MANY
    recorded = ((run.protocol.get("spreads") or {}).get("fid_std") or {}).get("draws")
    return int(recorded) if recorded else EvaluateParams().fid_bootstrap


def run_estimate(run: RunView, metric: str, spread: str | None) -> Estimate | None:
    """One run's value with its sampling standard error (a 95% half-width is divided by 1.96)."""
    m = run.metrics or {}
    if not _finite(m.get(metric)):
        return None
    se = m.get(spread) if spread else None
    if _finite(se) and spread.endswith("_ci95"):
        se = se / CI95_Z
    return Estimate(float(m[metric]), float(se) if _finite(se) else None, "sampling",
                    draws=spread_draws(run, spread or ""))


def unit_estimate(runs: list[RunView], metric: str, spread: str | None) -> Estimate | None:
    """A seed group's mean over its evaluated seeds (2 or more), else its one evaluated run's value."""
    values = [float(r.metrics[metric]) for r in runs if r.metrics and _finite(r.metrics.get(metric))]
    if len(values) >= 2:
        return seed_estimate(values)
    return next((e for e in (run_estimate(r, metric, spread) for r in runs) if e is not None), None)


# --------------------------------------------------------------------------- tables


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _present(columns, metrics: list[dict]) -> list:
    """The columns that at least one run has a number for (an all-empty column is noise)."""
    return [c for c in columns if any(_finite(m.get(c[0])) for m in metrics)] or columns[:1]


def metric_tables(runs: dict[str, RunView], comparisons: list[tuple[str, str]] | None = None) -> list[str]:
    """Markdown: the quality and probe tables, floors, seed groups and comparisons (of the declared
    pairs, params report.comparisons; None: every pair on one dataset)."""
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
        model = f"{p.model} + EMA {p.ema:g}" if p.ema is not None else p.model  # evaluate scores the average
        rows.append([name, model, p.dataset, str(p.epochs), str(p.seed), trained_label(run), *cells, *losses])
    rows += _floor_rows(runs, quality)
    lines += _table(["run", "model", "dataset", "epochs", "seed", "trained on", *(c[2] for c in quality), "G loss",
                     "D loss"], rows)
    lines += ["", _protocol_line(runs), TRAINED_ON_NOTE, *_null_notes(runs)]

    lines += training_cost_lines(runs)

    lines += ["", "## Linear probe on the frozen discriminator", ""]
    rows = []
    for name, run in runs.items():
        m = run.metrics or {}
        rows.append([name, *(cell(m.get(k), m.get(s), f) for k, s, _, f in probe)])
    lines += _table(["run", *(c[2] for c in probe)], rows)
    lines += ["", "Test accuracy ± the half-width of its 95% percentile-bootstrap interval over the test images "
              "(balanced accuracy, the mean per-class recall, for CelebA attributes and anime hair colours, with "
              "the majority class's plain accuracy beside it; plain accuracy for MNIST; params evaluate.probe_*). "
              "*D − random D* is the paired difference on the same test images, ± the half-width of its 95% "
              "interval over the same resamples; the random D is the run's own D at initialisation (its training "
              "seed). A D whose probe is not beyond its random D learned nothing the architecture does not "
              "already give."]

    groups = seed_groups(runs)
    if groups:
        lines += ["", "## Over seeds", "",
                  "Runs that differ only in `seed`: mean over the evaluated seeds ± its standard error (std across "
                  "seeds / √n; GAN results swing with the seed, Lucic et al. 2018). The std across seeds holds each "
                  "run's sampling noise and the seed's luck.", ""]
        # Every quality and probe column: the seed groups are what README and docs/results.md quote.
        columns = [(k, s, t, f) for k, s, t, f in [*quality, *probe] if s or k in (
            "mode_coverage", "mode_kl", "precision", "recall", "precision_domain", "recall_domain")]
        columns = _present(columns, evaluated)
        rows = []
        for group, names in groups.items():
            cells = []
            for key, spread, _, fmt in columns:
                values = [runs[n].metrics.get(key) for n in names if runs[n].metrics and _finite(runs[n].metrics.get(key))]
                if len(values) >= 2:
                    mean = seed_estimate(values)
                    cells.append(cell(mean.value, mean.se, ".3f" if fmt == "d" else fmt))
                else:
                    cells.append("–")
            # How the evaluated seeds trained: a seed not trained yet mixes nothing in.
            done = [runs[n] for n in names if runs[n].metrics]
            # The means are over the evaluated seeds: a group built in steps names the others.
            waiting = [n for n in names if not runs[n].metrics]
            members = ", ".join(names)
            if done and waiting:
                members = f"{', '.join(r.name for r in done)} (not evaluated yet: {', '.join(waiting)})"
            rows.append([group, members, units_label(done) if done else "–", *cells])
        lines += _table(["group", "runs", "trained on", *(c[2] for c in columns)], rows)

    lines += ["", "## Which differences are beyond noise", ""]
    lines += comparison_lines(runs, groups, comparisons)
    lines += ["", "## Does D beat its controls?", ""]
    lines += control_lines(runs, groups)
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
        at = floor.get("fid_at_count")
        read_at = f", FID read at {at}" if at and floor.get("num_images") and at > floor["num_images"] else ""
        rows.append([f"*real data{where} ({floor.get('num_images')} {floor.get('split')} images{read_at})*", "–",
                     run.params.dataset, "–", "–", "–", *cells, "", ""])  # no epochs, seed, trained on
    return rows


def _protocol_line(runs: dict[str, RunView]) -> str:
    protocols = {json.dumps({k: v for k, v in r.protocol.items() if k in ("protocol", "generated", "real")},
                            sort_keys=True) for r in runs.values() if r.protocol}
    if not protocols:
        return "No run evaluated yet."
    # One sentence per protocol as the page words it: runs whose protocol.json differs only in which G
    # is scored (G or its average, named in the model column) share one.
    parts = []
    for text in sorted(protocols):
        p = json.loads(text)
        g, real = p.get("generated", {}), p.get("real", {})
        parts.append(f"protocol {p.get('protocol')}: {g.get('count')} generated (G sampled in {g.get('sample_mode')} "
                     f"mode) vs {real.get('count')} real {real.get('split')} images of {real.get('dataset')}")
    return ("; ".join(dict.fromkeys(parts)) + ". FID, KID, precision, recall: Inception features; (domain): the MNIST classifier's "
            "features. ± is the standard error of the number over new generated sets with the real reference fixed "
            "(FID: std over bootstrap resamples of the generated features, conservative near the floor; KID: from "
            "its U-statistic, not the spread of single subsets); it is sampling noise only, the training seed's luck "
            "comes on top (see Over seeds). KID (domain) runs on the classifier's features divided by their RMS "
            "coordinate (protocol.json: kid_feature_scale). Precision and recall have no ±. The *real data* row is "
            "the same distance between the reference and a disjoint set of real images: the floor a generator is "
            "measured against; its FID is read at the generated set's size (FID falls like 1/n), extrapolated in "
            "1/n where fewer real images exist. Full protocol: runs/<run>/eval/protocol.json.")


def _null_notes(runs: dict[str, RunView]) -> list[str]:
    notes: dict[str, list[str]] = {}
    for name, run in runs.items():
        for metric, why in (run.protocol.get("notes") or {}).items():
            notes.setdefault(f"{metric}: {why}", []).append(name)
    return [f"- Empty `{text.split(':', 1)[0]}` ({', '.join(names)}):{text.split(':', 1)[1]}" for text, names in notes.items()]


def comparison_units(runs: dict[str, RunView], groups: dict[str, list[str]]) -> tuple[dict, list[str]]:
    """({unit name: (dataset, its runs)}, notes): every seed group and every run outside one.

    A group is kept whatever number of its seeds is evaluated (unit_estimate judges it as one run
    when only one is), and the notes say so rather than dropping it silently."""
    units: dict[str, tuple[str, list[RunView]]] = {}
    notes = []
    grouped = {n for names in groups.values() for n in names}
    for group, names in groups.items():
        evaluated = [n for n in names if runs[n].metrics]
        # A group with one evaluated seed is that run, and one with some of its seeds says how many:
        # its rows say so (a results page built in steps).
        if len(evaluated) == 1:
            label = f"{evaluated[0]} (1 of {len(names)} seeds)"
        elif 1 < len(evaluated) < len(names):
            label = f"{seed_group_name(names[0])} ({len(evaluated)} of {len(names)} seeds)"  # as seed_groups names it
        else:
            label = group
        units[label] = (runs[names[0]].params.dataset, [runs[n] for n in names])
        if len(evaluated) < 2:
            notes.append(f"- {group}: {len(evaluated)} of {len(names)} seeds evaluated"
                         + (f", so it is compared as the single run {evaluated[0]}." if evaluated else
                            ", so it is not compared."))
    for name, run in runs.items():
        if name not in grouped:
            units[name] = (run.params.dataset, [run])
    return units, notes


def _verdict(test: Test, reject: bool | None, better: str) -> str:
    if test.p is None:
        return "unknown: no seed spread"
    return f"**yes**: {better} is better" if reject else "no: within noise"


def declared_pairs(units: dict[str, tuple[str, list[RunView]]], comparisons: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The unit labels of each declared pair (params report.comparisons names a seed group without
    its seed suffix, whatever number of its seeds is evaluated, and a run outside a group by its name)."""
    label = {(seed_group_name(unit_runs[0].name) if len(unit_runs) > 1 else unit_runs[0].name): name
             for name, (_, unit_runs) in units.items()}
    pairs = []
    for pair in comparisons:
        for name in pair:
            if name not in label:
                raise ParamsError(f"{PARAMS_FILE}: report.comparisons: {name!r} is not a seed group or a run outside "
                                  f"one (those are: {', '.join(label)})")
        a, b = (label[name] for name in pair)
        if units[a][0] != units[b][0]:
            raise ParamsError(f"{PARAMS_FILE}: report.comparisons: {pair[0]} and {pair[1]} are on different datasets")
        pairs.append((a, b))
    return pairs


def comparison_lines(runs: dict[str, RunView], groups: dict[str, list[str]],
                     comparisons: list[tuple[str, str]] | None = None) -> list[str]:
    """For each pair of units (runs or seed groups) on one dataset, or each declared pair
    (`comparisons`, params report.comparisons), and each headline metric: the difference, the noise
    it is judged against, and whether it is beyond noise (Holm over the table)."""
    units, notes = comparison_units(runs, groups)
    estimates = {(u, metric): unit_estimate(unit_runs, metric, spread)
                 for u, (_, unit_runs) in units.items() for metric, spread, _ in HEADLINES}
    pools = {(dataset, metric): pooled_spread({u: estimates[u, metric] for u, (d, _) in units.items()
                                               if d == dataset and estimates[u, metric] is not None})
             for dataset, _ in units.values() for metric, _, _ in HEADLINES}
    names = list(units)
    if comparisons is None:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if units[a][0] == units[b][0]]
    else:
        pairs = declared_pairs(units, comparisons)
    tests = []
    for a, b in pairs:
        for metric, _, lower_better in HEADLINES:
            ea, eb = estimates[a, metric], estimates[b, metric]
            if ea is None or eb is None:
                continue
            test = compare(ea, eb, (a, b), pools[units[a][0], metric])
            tests.append((a, b, metric, lower_better, ea, eb, test))
    if not tests:
        empty = ("None of the pairs params report.comparisons declares is evaluated on both sides yet."
                 if comparisons is not None else "No two evaluated runs (or seed groups) of one dataset to compare.")
        return [empty, *([""] + notes if notes else [])]
    decided = [t for t in tests if t[-1].p is not None]
    reject = dict(zip(map(id, decided), holm([t[-1].p for t in decided])))
    rows = []
    for entry in tests:
        a, b, metric, lower_better, ea, eb, test = entry
        better = a if (test.diff < 0) == lower_better else b
        noise = "–" if test.noise is None else f"{test.diff:+.4g} (noise sd {test.noise:.2g})"
        # Only the runs behind the two numbers: a seed not evaluated yet mixes nothing in.
        mixes = units_label([r for r in units[a][1] + units[b][1] if r.metrics and _finite(r.metrics.get(metric))])
        basis = test.basis + (f"; **{mixes}**" if mixes.startswith("mixes") else "")
        rows.append([f"{a} vs {b}", metric, f"{ea.value:.4g} vs {eb.value:.4g}", noise, basis,
                     "–" if test.p is None else f"{test.p:.2g}", _verdict(test, reject.get(id(entry)), better)])
    return [*_table(["pair", "metric", "values", "difference", "noise", "p", "beyond noise?"], rows), "",
            f"Each difference is tested against the noise named beside it, two-sided. A seed group's number is its "
            f"mean over seeds and its noise the spread across seeds (which holds each run's sampling noise and the "
            f"seed's luck): group vs group is Welch's t. A single run's seed spread is unknown, not zero: against a "
            f"group it is lent that group's seed spread (t with the group's n - 1 df); between two single runs the "
            f"seed spread pooled over the dataset's seed groups is borrowed, and where the dataset has none the "
            f"verdict is *unknown* (add seeds: docs/comparing.md, Seeds), with the test against sampling noise alone shown for "
            f"information. *yes* means beyond noise after Holm's correction over the {len(decided)} tests of this "
            f"table (family-wise error 5%{_family(comparisons)}). Where the noise column says *mixes*, the runs compared (or a group's "
            f"seeds) were trained on other devices or precisions (train.json), so the difference holds that too.",
            *([""] + notes if notes else [])]


def _family(comparisons: list[tuple[str, str]] | None) -> str:
    if comparisons is None:
        return "; every pair of runs or seed groups on one dataset: params report.comparisons can name the pairs asked about"
    asked = ", ".join(f"{a} vs {b}" for a, b in comparisons)
    return f"; the pairs params report.comparisons declares, and only those: {asked}"


def shared_test_noise(runs: list[RunView], metric: str) -> float | None:
    """The variance of a seed group's mean paired difference that comes from the test images the
    seeds share, or None where it cannot be had (a run without resamples, other resamples).

    Every run of a dataset scores its probes on the same test images and resamples them with the
    same seeded bootstrap (evaluate.seed), so resample b of every seed is the same draw of test
    images. The variance over b of the seeds' mean centred difference is the test-set noise of the
    group's mean, the part the seeds share included, which the spread across seeds misses."""
    draws = []
    for run in runs:
        paired = ((run.details.get("probe") or {}).get("paired") or {}).get(metric) or {}
        bootstrap = (run.details.get("probe") or {}).get("bootstrap") or {}
        if not paired.get("resamples"):
            return None
        draws.append((np.asarray(paired["resamples"]), (bootstrap.get("seed"), bootstrap.get("resamples"),
                                                         (run.details.get("probe") or {}).get("test_images"))))
    if len(draws) < 2 or len({key for _, key in draws}) != 1:
        return None
    centred = np.mean([values - values.mean() for values, _ in draws], axis=0)
    return float(centred.var(ddof=1))


def control_lines(runs: dict[str, RunView], groups: dict[str, list[str]]) -> list[str]:
    """D against its controls (random D, pixels), paired on the same test images: per run, the
    paired bootstrap interval; per seed group, a t-test over the seeds' paired differences whose
    standard error also holds the test-set noise the seeds share (shared_test_noise)."""
    units, _ = comparison_units(runs, groups)
    rows, tests = [], []
    for unit, (_, unit_runs) in units.items():
        for metric, spread, control in CONTROLS:
            estimate = unit_estimate(unit_runs, metric, spread)
            if estimate is None:
                continue
            basis = "test images only (paired bootstrap); seed spread unknown"
            if estimate.kind == "seeds":
                basis = f"over {estimate.n} seeds (t, {estimate.n - 1} df)"
                evaluated = [r for r in unit_runs if r.metrics and _finite(r.metrics.get(metric))]
                shared = shared_test_noise(evaluated, metric)
                if shared is not None:
                    # The spread across seeds holds each seed's own test noise but not the part they
                    # share; adding the joint bootstrap's variance of the mean counts the first part
                    # twice: on the safe side.
                    estimate = Estimate(estimate.value, math.sqrt(estimate.se ** 2 + shared), "seeds", estimate.n,
                                        sd=estimate.sd)
                    basis += " + the test images' noise, joint bootstrap across the seeds"
                else:
                    basis += "; the test images' shared noise not included (no per-resample differences)"
            tests.append((unit, control, estimate, one_sample(estimate), basis))
    if not tests:
        return ["No run has the paired probe differences yet (evaluated before they existed: re-run evaluate)."]
    decided = [t for t in tests if t[3] is not None]
    reject = dict(zip(map(id, decided), holm([t[3] for t in decided])))
    for entry in tests:
        unit, control, estimate, p, basis = entry
        verdict = "–" if p is None else (("**yes**: D is better" if estimate.value > 0 else f"**no**: {control} is better")
                                         if reject[id(entry)] else "no: within noise")
        rows.append([unit, control, cell(estimate.value, estimate.se, "+.3f"), basis,
                     "–" if p is None else f"{p:.2g}", verdict])
    return [*_table(["run or group", "control", "D − control ± se", "noise", "p", "D beyond the control?"], rows), "",
            "D and its controls are scored on the same test images, so each difference is paired. One run: the "
            "standard error of the paired difference over the same bootstrap resamples of the test images (sampling "
            "only; another training seed could differ). A seed group: the mean of its runs' paired differences ± its "
            "standard error, each seed with its own random D (its D at initialisation), judged with t: the spread "
            "across seeds, plus the variance of the seeds' mean over the same bootstrap resamples of the test images "
            "(every seed is scored on the same test images, so their test-set noise is partly shared and the spread "
            f"across seeds alone would understate it). Holm over the {len(decided)} tests of this table."]


# --------------------------------------------------------------------------- page


def _curve_figure(curves: dict[str, tuple[list[float], list[float]]], title: str, offset: int = 1,
                  bands: dict[str, tuple[list[float], list[float]]] | None = None):
    """One line per entry of `curves`; `bands` shades (low, high) around the lines it names."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (steps, values) in curves.items():
        xs = [s + offset for s in steps]
        line, = ax.plot(xs, values, label=name, linewidth=1.2, marker="o" if len(steps) <= 50 else None, markersize=3)
        if bands and name in bands:
            ax.fill_between(xs, *bands[name], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    epochs = [s + offset for steps, _ in curves.values() for s in steps]
    if epochs and min(epochs) > 0 and max(epochs) / min(epochs) >= 50:
        ax.set_xscale("log")  # snapshots spaced for a long run (1, 2, 5, ..., 200): each gets room
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 1, 10, 100, not 10^0
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def group_curve(members: list[RunView], metric: str) -> tuple[list[float], list[Estimate]] | None:
    """A seed group's curve over training: at each epoch every evaluated member's curve has, the
    mean over the seeds ± its standard error (as the Over seeds table); None under 2 such members."""
    curves = [dict(zip(*r.eval_curves[metric])) for r in members if metric in r.eval_curves]
    if len(curves) < 2:
        return None
    epochs = sorted(set.intersection(*(set(c) for c in curves)))
    return epochs, [seed_estimate([c[e] for c in curves]) for e in epochs]


def eval_curve_figure(runs: dict[str, RunView], groups: dict[str, list[str]], metric: str, title: str):
    """The curve of each seed group (its mean over the seeds, shaded from the lowest to the highest
    seed) and of each run outside one; None when no run has the curve. Eleven runs' lines in one
    small figure hide each other, and a group's seeds are one experiment."""
    curves, bands, grouped = {}, {}, set()
    for group, names in groups.items():
        members = [runs[n] for n in names]
        mean = group_curve(members, metric)
        if mean is None:
            continue
        epochs, estimates = mean
        label = f"{group}: mean, seed range"
        curves[label] = (epochs, [e.value for e in estimates])
        seeds = [dict(zip(*r.eval_curves[metric])) for r in members if metric in r.eval_curves]
        bands[label] = ([min(c[e] for c in seeds) for e in epochs], [max(c[e] for c in seeds) for e in epochs])
        grouped.update(names)
    for name, run in runs.items():
        if name not in grouped and metric in run.eval_curves:
            curves[name] = run.eval_curves[metric]
    if not curves:
        return None
    figure = _curve_figure(curves, title, offset=0, bands=bands)
    if metric.startswith("fid") and all(v > 0 for _, values in curves.values() for v in values):
        # Runs an order of magnitude apart (the MLP GAN's 100s, the DCGANs' 10s) on one axis:
        # a log scale keeps the DCGAN variants' differences visible.
        figure.axes[0].set_yscale("log")
        # 20, 30, 50, 100 rather than 2x10^1, and not every minor tick (60 70 80 90 collide)
        figure.axes[0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        figure.axes[0].yaxis.set_minor_formatter(FuncFormatter(
            lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else ""))
        figure.axes[0].set_ylabel(f"{metric} (log scale)")
    return figure


def _hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def device_label(device: dict) -> str:
    """A stretch's device as the cost table names it. CPUs of one model name differ several-fold in
    speed by instruction set and threads (an AMD EPYC with AVX2 trained the MNIST DCGAN at 211 s an
    epoch, one with AVX-512 at 63 s, both fp32 on 2 threads), so a CPU carries both:
    'AMD EPYC (AVX512, 2 threads)'."""
    name = device.get("name", "?")
    if device.get("kind") != "cpu":
        return name
    extra = [str(device["capability"])] if device.get("capability") else []
    extra += [f"{device['threads']} thread{'s' * (device['threads'] != 1)}"] if device.get("threads") else []
    return f"{name} ({', '.join(extra)})" if extra else name


def training_cost_lines(runs: dict[str, RunView]) -> list[str]:
    """What each run's training cost, from its train.json: device, precision, time and speed."""
    rows = []
    for name, run in runs.items():
        record = run.record
        if not record.get("epochs"):
            continue
        devices = sorted({device_label(s.get("device") or {}) for s in record.get("stretches", [])
                          if not s.get("unrecorded")})
        rows.append([name, trained_label(run), ", ".join(devices), str(len(record["epochs"])),
                     _hours(record.get("train_seconds") or 0), f"{record['seconds_per_epoch']:.1f}",
                     f"{record['images_per_s']:,.0f}"])
    if not rows:
        return []
    return ["", "## What training cost", "",
            *_table(["run", "trained on", "device", "epochs timed", "training (h:mm)", "s / epoch (median)",
                     "images/s (median)"], rows),
            "", "From each run's train.json: the training loop's own time (steps, checkpoints, grids), without "
            "evaluation; epochs trained before a resume on another machine count where they ran."]


def fid_curve_lines(runs: dict[str, RunView], groups: dict[str, list[str]], figure: str | None = None) -> list[str]:
    """The standard FID at each snapshot evaluate scored (curve.tsv), with its spread, for each
    seed group (mean over the seeds ± standard error) and each run (± bootstrap std), and the
    epoch where it was lowest; `figure` is the page's path of its plot (eval_curve_figure)."""
    rows = []  # (label, {epoch: cell}, best epoch, samples per point, headline epoch)
    for group, names in groups.items():
        mean = group_curve([runs[n] for n in names], "fid")
        if mean is not None:
            epochs, estimates = mean
            best = epochs[min(range(len(epochs)), key=lambda i: estimates[i].value)]
            samples = {str((runs[n].protocol.get("curve") or {}).get("samples", "?")) for n in names}
            n = estimates[0].n
            rows.append((f"{group}: mean" if n == len(names) else f"{group}: mean of the {n} evaluated",
                         {e: cell(est.value, est.se, ".1f") for e, est in zip(epochs, estimates)}, best,
                         " / ".join(sorted(samples)), runs[names[0]].params.epochs))
    for name, run in runs.items():
        if "fid" not in run.eval_curves:
            continue
        epochs, values = run.eval_curves["fid"]
        spread = dict(zip(*run.eval_curves.get("fid_std", ([], []))))
        best = epochs[min(range(len(epochs)), key=values.__getitem__)]
        rows.append((name, {e: cell(v, spread.get(e), ".1f") for e, v in zip(epochs, values)}, best,
                     str((run.protocol.get("curve") or {}).get("samples", "?")), run.params.epochs))
    if not rows:
        return []
    columns = sorted({e for _, cells, *_ in rows for e in cells})
    table = _table(["run or group", *(f"epoch {e:g}" for e in columns), "lowest at epoch", "samples per point",
                    "headline epoch"],
                   [[label, *(cells.get(e, "") for e in columns), f"{best:g}", samples, str(headline)]
                    for label, cells, best, samples, headline in rows])
    return ["", "## Standard FID over training", "",
            "The Inception FID of G's snapshots (`runs.<run>.snapshot_every`, scored by evaluate with "
            "`evaluate.curve_samples` samples a point against the same test reference as the headline). A run's ± "
            "is the bootstrap std of its point; a seed group's is the standard error of its mean over the seeds, "
            "whose figure line is that mean, shaded from the lowest seed to the highest.", "",
            *([f"![{FID_CURVE_TITLE}]({figure})", ""] if figure else []), *table, "",
            "The curves' points use fewer samples than the headline (FID is biased upwards at small n: compare "
            "points of one curve, not a point with the headline). The lowest point is found on the test reference, "
            "so it describes the run; the headline numbers stay the last epoch's, since reporting the best epoch "
            "would select on the test set."]


def build_report(params: Params, runs_dir: Path | str, out_dir: Path | str, leave_out: Iterable[str] = ()) -> Path:
    """Write the report folder for every run in `params.runs` (those of `leave_out` as not made
    yet); returns the page's path."""
    with staged_dir(out_dir) as tmp:
        _write(collect_runs(params, runs_dir, leave_out), tmp, params.report.comparisons)
    return Path(out_dir) / PAGE


def _write(runs: dict[str, RunView], out: Path, comparisons: list[tuple[str, str]] | None = None) -> None:
    (out / "samples").mkdir()
    (out / "figures").mkdir()
    lines = ["# GAN / DCGAN runs", "",
             f"{len(runs)} runs (the `runs` of the params.yaml they were trained with). FID and KID: lower is better; precision, recall, classes covered "
             "and probe accuracy: higher is better; KL(uniform) of the generated class histogram: 0 is every digit "
             "equally often, 2.30 is one digit only (mode collapse).", ""]
    lines += metric_tables(runs, comparisons)

    lines += ["", "## Samples (last fixed-noise grid)", ""]
    with_grid = [n for n, r in runs.items() if r.folder and (r.folder / "samples" / "final.png").is_file()]
    if with_grid:
        for name in with_grid:
            shutil.copyfile(runs[name].folder / "samples" / "final.png", out / "samples" / f"{name}.png")
        lines += _table(with_grid, [[f"![{n}](samples/{n}.png)" for n in with_grid]])
    else:
        lines.append("No sample grids yet.")

    lines += ["", "## Training curves", ""]
    drawn = 0
    for metric, title in CURVES:  # DVCLive step 0 = after epoch 1
        having = {n: r.curves[metric] for n, r in runs.items() if metric in r.curves}
        if having:
            save_figure(_curve_figure(having, title), out / "figures" / f"{metric}.png")
            lines += [f"![{title}](figures/{metric}.png)", ""]
            drawn += 1
    groups = seed_groups(runs)
    for metric, title in EVAL_CURVES:  # curve.tsv holds epochs
        if metric == "fid":
            continue  # under its own heading, beside its table (fid_curve_lines)
        figure = eval_curve_figure(runs, groups, metric, title)
        if figure is not None:
            save_figure(figure, out / "figures" / f"{metric}.png")
            lines += [f"![{title}](figures/{metric}.png)", ""]
            drawn += 1
    if not drawn:
        lines.append("No training logs yet.")
    figure = eval_curve_figure(runs, groups, "fid", FID_CURVE_TITLE)
    if figure is not None:
        save_figure(figure, out / "figures" / "fid.png")
    lines += fid_curve_lines(runs, groups, "figures/fid.png" if figure is not None else None)

    histograms = [n for n, r in runs.items() if r.folder and (r.folder / "eval" / "class_histogram.png").is_file()]
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
        record = show(f"runs/{name}/train.json")  # cache: false, so git holds it like the metrics
        out[f"{name}@{rev}"] = RunView(name=f"{name}@{rev}", params=run, source=rev,
                                       metrics=json.loads(metrics) if metrics else None,
                                       trained=live is not None, live=json.loads(live) if live else {},
                                       record=json.loads(record) if record else {})
    return out


def compare_text(params: Params, runs_dir: Path | str, revisions: list[str], repo: Path | str = ".") -> str:
    """`python -m pipeline compare`: the report's tables for the workspace (no revisions) or
    for the given git revisions / DVC experiments, side by side."""
    runs: dict[str, RunView] = {}
    if not revisions:
        runs = collect_runs(params, runs_dir)
    for rev in revisions:
        runs.update(collect_runs_at(rev, repo))
    # Runs from revisions are named <run>@<rev>: the declared pairs name workspace runs only.
    return "\n".join(metric_tables(runs, None if revisions else params.report.comparisons)) + "\n"

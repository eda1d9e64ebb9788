"""The report page: every run gets a row with its spreads, seeds are grouped, differences are
judged against their noise, grids side by side, curves from real DVCLive logs and curve.tsv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dvclive import Live
from PIL import Image

from pipeline.config import Params, ParamsError
from scipy import stats

from pipeline.comparisons import Estimate, compare, holm, pooled_spread, seed_estimate
from pipeline.config import RunParams
from pipeline.report import RunView, build_report, collect_runs, comparison_lines, control_lines, metric_tables, \
    read_curves, seed_groups, trained_label

MNIST = {"dataset": "mnist", "epochs": 3}
RUNS = {
    "gan-mnist": {"model": "gan", **MNIST},
    "dcgan-mnist": {"model": "dcgan", **MNIST},
    "dcgan-anime": {"model": "dcgan", "dataset": "anime", "epochs": 3},
}
FLOOR = {"split": "train", "num_images": 10000, "inception": None,
         "domain": {"fid": 0.9, "fid_std": 0.05, "kid": 0.0001, "kid_std": 0.0001, "precision": 0.8, "recall": 0.8}}


def metrics(fid_domain: float, probe: float, **extra) -> dict:
    return {"fid": None, "fid_std": None, "kid": None, "kid_std": None, "precision": None, "recall": None,
            "fid_domain": fid_domain, "fid_domain_std": 0.5, "kid_domain": 0.01234, "kid_domain_std": 0.001,
            "precision_domain": 0.5, "recall_domain": 0.25, "mode_coverage": 3, "mode_kl": 1.1,
            "probe_acc": probe, "probe_acc_ci95": 0.01, "probe_acc_random_d": 0.8, "probe_acc_random_d_ci95": 0.01,
            "probe_acc_pixels": 0.85, "probe_acc_pixels_ci95": 0.01, "fid_floor": None, "fid_domain_floor": 0.9,
            "num_samples": 10000, "num_real": 10000, **extra}


def fake_run(folder: Path, run_metrics: dict | None, seed: int, curve: bool = True) -> None:
    """What train and evaluate leave behind: weights marker, a grid, DVCLive logs, metrics.json."""
    (folder / "samples").mkdir(parents=True)
    (folder / "generator.pt").write_bytes(b"weights")
    pixels = np.random.default_rng(seed).integers(0, 256, (66, 66, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "samples" / "final.png")
    live = Live(dir=str(folder / "dvclive"), save_dvc_exp=False, dvcyaml=False)
    for epoch in range(3):
        live.log_metric("loss_d", 1.0 - 0.1 * epoch)
        live.log_metric("loss_g", 2.0 + seed + epoch)
        live.next_step()
    live.end()
    if curve:
        (folder / "curve.tsv").write_text("epoch\tfid_domain\tmode_coverage\tmode_kl\n"
                                          f"2\t{50 + seed}\t7\t0.3\n3\t{40 + seed}\t8\t0.2\n")
    if run_metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(run_metrics))
        protocol = {"protocol": "test10k", "generated": {"count": 10000, "sample_mode": "eval"},
                    "real": {"split": "test", "count": 10000, "dataset": "mnist"}, "floor": FLOOR,
                    "notes": {"fid": "evaluate.inception: false (no Inception weights): standard FID not computed"}}
        (folder / "eval").mkdir()
        (folder / "eval" / "protocol.json").write_text(json.dumps(protocol))


def table(text: str, heading: str) -> list[str]:
    return [line for line in text.split(f"## {heading}")[1].split("\n## ")[0].splitlines() if line.startswith("| ")]


def test_report_has_a_row_per_run_with_spreads_floor_grids_and_curves(tmp_path):
    params = Params(runs=RUNS)
    runs = tmp_path / "runs"
    fake_run(runs / "gan-mnist", metrics(41.2345, 0.9), seed=0)
    fake_run(runs / "dcgan-mnist", None, seed=1)  # trained, not evaluated
    # dcgan-anime: not trained at all

    page = build_report(params, runs, tmp_path / "reports")
    text = page.read_text()
    rows = table(text, "Sample quality")
    gan = next(r for r in rows if r.startswith("| gan-mnist"))
    assert "41.23 ± 0.50" in gan and "0.0123 ± 0.0010" in gan and "| 3 |" in gan
    assert "| FID |" not in rows[0]  # a column no run has a number for is left out
    assert gan.split("|")[-3].strip() == "4.000"  # the last G loss, from DVCLive's metrics.json
    assert "not evaluated" in next(r for r in rows if r.startswith("| dcgan-mnist"))
    assert "not trained" in next(r for r in rows if r.startswith("| dcgan-anime"))
    floor = next(r for r in rows if "real data" in r)
    assert "10000 train images" in floor and "0.90 ± 0.05" in floor
    # Every row has the header's columns: the real-data numbers stand under their own headings.
    cells = lambda row: [c.strip() for c in row.strip().strip("|").split("|")]  # noqa: E731
    header = cells(rows[0])
    assert all(len(cells(row)) == len(header) for row in rows), rows
    assert dict(zip(header, cells(floor)))["trained on"] == "–"
    assert "0.90 ± 0.05" in [value for key, value in zip(header, cells(floor)) if "FID" in key]
    assert "Empty `fid` (gan-mnist): evaluate.inception: false" in text
    probe = next(r for r in table(text, "Linear probe") if r.startswith("| gan-mnist"))
    assert "0.900 ± 0.010" in probe

    reports = tmp_path / "reports"
    for name in ("gan-mnist", "dcgan-mnist"):
        assert f"![{name}](samples/{name}.png)" in text
        assert (reports / "samples" / f"{name}.png").read_bytes() == (runs / name / "samples" / "final.png").read_bytes()
    for figure in ("loss_d", "loss_g", "fid_domain", "mode_coverage"):
        assert f"figures/{figure}.png" in text and (reports / "figures" / f"{figure}.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".reports.tmp-*"))  # no temporary folder left behind

    build_report(params, runs, reports)  # a rebuild replaces the folder
    assert (reports / "index.md").read_text() == text



def test_a_run_left_out_shows_as_not_made_although_its_files_are_there(tmp_path):
    params = Params(runs=RUNS)
    runs = tmp_path / "runs"
    fake_run(runs / "gan-mnist", metrics(41.2345, 0.9), seed=0)
    fake_run(runs / "dcgan-mnist", metrics(12.5, 0.95), seed=1)
    text = build_report(params, runs, tmp_path / "reports", leave_out=["gan-mnist"]).read_text()
    rows = table(text, "Sample quality")
    assert "not trained" in next(r for r in rows if r.startswith("| gan-mnist")) and "41.23" not in text
    assert "12.50" in next(r for r in rows if r.startswith("| dcgan-mnist"))

def test_runs_scoring_g_or_its_average_share_one_protocol_sentence_and_other_protocols_get_their_own(tmp_path):
    params = Params(runs=RUNS)
    runs = tmp_path / "runs"
    for seed, name in enumerate(RUNS):
        fake_run(runs / name, metrics(40.0 + seed, 0.9), seed=seed)
    def generated(path: Path, **changes) -> None:
        protocol = json.loads(path.read_text())
        protocol["generated"].update(changes)
        path.write_text(json.dumps(protocol))
    generated(runs / "dcgan-mnist" / "eval" / "protocol.json", generator={"weights": "ema/generator.pt"})
    generated(runs / "dcgan-anime" / "eval" / "protocol.json", count=5000)
    text = build_report(params, runs, tmp_path / "reports").read_text()
    assert text.count("protocol test10k: 10000 generated") == 1
    assert text.count("protocol test10k: 5000 generated") == 1


def test_seeds_are_grouped_and_differences_judged_against_the_seed_spread(tmp_path):
    runs = tmp_path / "runs"
    spec = {}
    for seed, (gan, dcgan) in enumerate([(900, 230), (1000, 240), (950, 250)]):
        spec[f"gan-mnist-s{seed}"] = {"model": "gan", **MNIST, "seed": seed}
        spec[f"dcgan-mnist-s{seed}"] = {"model": "dcgan", **MNIST, "seed": seed}
        fake_run(runs / f"gan-mnist-s{seed}", metrics(gan, 0.95 + 0.001 * seed), seed)
        fake_run(runs / f"dcgan-mnist-s{seed}", metrics(dcgan, 0.951 + 0.001 * seed), seed)
    params = Params(runs=spec)
    assert seed_groups(collect_runs(params, runs)) == {
        "gan-mnist (3 seeds)": ["gan-mnist-s0", "gan-mnist-s1", "gan-mnist-s2"],
        "dcgan-mnist (3 seeds)": ["dcgan-mnist-s0", "dcgan-mnist-s1", "dcgan-mnist-s2"]}
    text = build_report(params, runs, tmp_path / "reports").read_text()
    group = next(r for r in table(text, "Over seeds") if r.startswith("| gan-mnist (3 seeds)"))
    assert "950.00 ± 28.87" in group  # mean ± its standard error, std across seeds (50) / sqrt(3)
    verdicts = table(text, "Which differences are beyond noise")
    fid = next(r for r in verdicts if "| fid_domain |" in r)
    assert "**yes**: dcgan-mnist (3 seeds) is better" in fid and "seeds, Welch t" in fid
    probe = next(r for r in verdicts if "| probe_acc |" in r)
    assert "no: within noise" in probe  # 0.001 apart, seed std 0.001


def test_declared_comparisons_are_the_only_tests_and_holm_runs_over_them_alone():
    """Three seed groups and a single run: every pair is 6 pairs x 3 metrics (fid_domain, kid_domain,
    probe_acc); the declared two are 6 rows, 4 of them tests (kid_domain is the same in every run: no
    spread, no test), named on the page; a declared pair not evaluated yet is skipped."""
    runs = {}
    for seed in range(3):
        for group, ngf, value in (("a", 64, 900), ("b", 32, 200), ("c", 16, 195)):
            runs[f"{group}-s{seed}"] = view(f"{group}-s{seed}", seed, metrics(value + 10 * seed, 0.95 + 0.001 * seed), ngf=ngf)
    runs["a-long"] = view("a-long", 0, metrics(500, 0.95), ngf=8)
    groups = seed_groups(runs)
    every = [line for line in comparison_lines(runs, groups) if line.startswith("| ") and " vs " in line]
    assert len(every) == 6 * 3
    lines = comparison_lines(runs, groups, [("a", "b"), ("b", "c")])
    rows = [line for line in lines if line.startswith("| ") and " vs " in line]
    assert [r.split(" | ")[0] for r in rows[::3]] == ["| a (3 seeds) vs b (3 seeds)", "| b (3 seeds) vs c (3 seeds)"]
    assert len(rows) == 6 and "over the 4 tests of this table" in "\n".join(lines)
    assert "declares, and only those: a vs b, b vs c" in "\n".join(lines)
    runs["a-e2"] = view("a-e2", 0, None, ngf=4)  # declared, not evaluated yet: no row, no error
    assert len([l for l in comparison_lines(runs, seed_groups(runs), [("a", "b"), ("a", "a-e2")])
                if l.startswith("| ") and " vs " in l]) == 3
    with pytest.raises(ParamsError, match="report.comparisons: 'a-s0' is not a seed group or a run outside one"):
        comparison_lines(runs, groups, [("a-s0", "b")])


def view(name: str, seed: int, metrics_: dict | None, model: str = "dcgan", ngf: int = 64) -> RunView:
    """A run as the report reads it, straight from metrics (no files)."""
    return RunView(name=name, params=RunParams(model=model, dataset="mnist", seed=seed, ngf=ngf), metrics=metrics_)


def verdict_rows(runs: dict[str, RunView]) -> list[str]:
    return [line for line in comparison_lines(runs, seed_groups(runs)) if line.startswith("| ") and " vs " in line]


def row(rows: list[str], metric: str) -> str:
    return next(r for r in rows if f"| {metric} |" in r)


def test_a_single_run_against_a_seed_group_is_lent_the_groups_seed_spread():
    """The issue's workspace: dcgan-mnist over 5 seeds (fid_domain 190-210, seed sd 7.9) against
    one run of a variant at 215 (sampling sd 1.3). Judged by sampling noise alone it was "yes";
    with the group's seed spread lent to the variant the gap is well inside the noise."""
    runs = {f"dcgan-mnist-s{i}": view(f"dcgan-mnist-s{i}", i, metrics(v, 0.95)) for i, v in
            enumerate([190, 195, 200, 205, 210])}
    runs["dcgan-wide"] = view("dcgan-wide", 0, metrics(215, 0.95, fid_domain_std=1.3), ngf=128)
    fid = row(verdict_rows(runs), "fid_domain")
    assert "no: within noise" in fid and "seed sd of dcgan-mnist (5 seeds) lent to dcgan-wide" in fid
    sd = np.std([190, 195, 200, 205, 210], ddof=1)
    noise = sd * np.sqrt(1 / 5 + 1)
    assert f"noise sd {noise:.2g}" in fid
    p = 2 * stats.t.sf(15 / noise, 4)  # t with the group's n - 1 = 4 df
    assert f"| {p:.2g} |" in fid


def test_two_single_runs_borrow_a_seed_spread_or_say_it_is_unknown():
    a = view("dcgan-mnist", 0, metrics(200, 0.95))
    b = view("dcgan-wide", 0, metrics(230, 0.95), ngf=128)  # 60 sampling sds apart
    fid = row(verdict_rows({"dcgan-mnist": a, "dcgan-wide": b}), "fid_domain")
    assert "unknown: no seed spread" in fid and "**yes**" not in fid
    assert "against sampling noise alone p = " in fid
    # With a seed group on the dataset, its seed spread is borrowed (and named).
    runs = {"dcgan-mnist": a, "dcgan-wide": b}
    runs.update({f"gan-mnist-s{i}": view(f"gan-mnist-s{i}", i, metrics(v, 0.9), model="gan")
                 for i, v in enumerate([900, 910, 920])})
    fid = row([r for r in verdict_rows(runs) if r.startswith("| dcgan-mnist vs dcgan-wide")], "fid_domain")
    assert "seed sd borrowed from gan-mnist (3 seeds), t with 2 df" in fid
    assert "no: within noise" in fid  # 30 apart against a seed sd of 10 with 2 df: p = 0.07


def test_group_verdicts_use_welchs_t_not_the_normal_quantile():
    """Three seeds each, 2.4 standard errors apart: beyond 1.96, not beyond t(4 df) = 2.78."""
    a, b = seed_estimate([100.0, 102.0, 104.0]), seed_estimate([106.0, 108.0, 110.0])  # se 1.155 each
    b.value = a.value + 2.4 * np.hypot(a.se, b.se)
    test = compare(a, b, ("a", "b"))
    assert abs(test.diff) / test.noise > 1.96 and test.p > 0.05
    assert test.p == pytest.approx(stats.ttest_ind_from_stats(a.value, a.sd, 3, b.value, b.sd, 3, equal_var=False).pvalue)


def test_holm_controls_the_table_and_every_test_is_counted():
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.01 < 0.05/3, then 0.03 > 0.05/2 stops
    assert holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.02 < 0.025, 0.04 < 0.05
    # In the report: two groups whose fid_domain differs at p ~ 0.03, tested alone a "yes"; the
    # table also tests probe_acc (kid_domain has no seed spread: not a test), so Holm needs 0.025.
    runs = {}
    for i, (x, y) in enumerate([(200, 202.7), (201, 203.7), (202, 204.7)]):
        runs[f"dcgan-mnist-s{i}"] = view(f"dcgan-mnist-s{i}", i, metrics(x, 0.95 + i / 100))
        runs[f"gan-mnist-s{i}"] = view(f"gan-mnist-s{i}", i, metrics(y, 0.95 + i / 100), model="gan")
    lines = comparison_lines(runs, seed_groups(runs))
    fid = row(lines, "fid_domain")
    p = float(fid.split("|")[6])
    assert 0.025 < p < 0.05 and "no: within noise" in fid
    assert "Holm's correction over the 2 tests of this table" in "\n".join(lines)
    assert "unknown" in row(lines, "kid_domain")


def test_a_seed_group_with_one_evaluated_run_is_compared_as_that_run_and_said_so():
    runs = {"dcgan-mnist-s0": view("dcgan-mnist-s0", 0, metrics(200, 0.95)),
            "dcgan-mnist-s1": view("dcgan-mnist-s1", 1, None),
            "gan-mnist": view("gan-mnist", 0, metrics(900, 0.9), model="gan")}
    lines = comparison_lines(runs, seed_groups(runs))
    # The row names the one run it stands on, not a group mean it is not.
    assert any(line.startswith("| dcgan-mnist-s0 (1 of 2 seeds) vs gan-mnist | fid_domain") for line in lines)
    assert not any(line.startswith("| dcgan-mnist (2 seeds) vs") for line in lines)
    assert "- dcgan-mnist (2 seeds): 1 of 2 seeds evaluated, so it is compared as the single run dcgan-mnist-s0." in lines
    # Two of three seeds: a group mean, over the two it has.
    runs["dcgan-mnist-s2"] = view("dcgan-mnist-s2", 2, metrics(205, 0.95))
    runs["dcgan-mnist-s1"] = view("dcgan-mnist-s1", 1, None)
    lines = comparison_lines(runs, seed_groups(runs))
    assert any(line.startswith("| dcgan-mnist (2 of 3 seeds) vs gan-mnist | fid_domain") for line in lines)


def test_d_against_random_d_is_paired_per_run_and_over_seeds():
    runs = {f"dcgan-mnist-s{i}": view(f"dcgan-mnist-s{i}", i, metrics(200, 0.95, probe_vs_random_d=gain,
                                                                     probe_vs_random_d_ci95=0.01))
            for i, gain in enumerate([0.02, 0.03, 0.025])}
    runs["gan-mnist"] = view("gan-mnist", 0, metrics(900, 0.9, probe_vs_random_d=0.004, probe_vs_random_d_ci95=0.01),
                             model="gan")
    lines = control_lines(runs, seed_groups(runs))
    group = next(line for line in lines if line.startswith("| dcgan-mnist (3 seeds) | random D"))
    p = stats.ttest_1samp([0.02, 0.03, 0.025], 0).pvalue
    assert "over 3 seeds (t, 2 df)" in group and f"| {p:.2g} |" in group and "**yes**: D is better" in group
    single = next(line for line in lines if line.startswith("| gan-mnist | random D"))
    assert "paired bootstrap" in single and "no: within noise" in single
    assert f"+0.004 ± {0.01 / 1.96:.3f}" in single


def test_pooled_seed_spread_weights_groups_by_their_degrees_of_freedom():
    pool = pooled_spread({"a": seed_estimate([1.0, 3.0]), "b": seed_estimate([0.0, 3.0, 6.0]),
                          "c": Estimate(5.0, 0.1, "sampling")})
    assert pool.df == 3 and pool.groups == ["a", "b"]
    assert pool.sd == pytest.approx(np.sqrt((1 * 2.0 + 2 * 9.0) / 3))


def test_curves_are_read_from_dvclive_tsv(tmp_path):
    fake_run(tmp_path / "run", None, seed=2)
    curves = read_curves(tmp_path / "run" / "dvclive")
    assert curves["loss_g"] == ([0.0, 1.0, 2.0], [4.0, 5.0, 6.0])


def record(*stretches: tuple[str, str]) -> dict:
    """A train.json with one stretch per (device kind, precision)."""
    out = [{"device": {"kind": kind, "name": kind.upper()}, "precision": precision} for kind, precision in stretches]
    return {"stretches": out, "mixed": len(set(stretches)) > 1}


def test_device_and_precision_are_shown_and_a_group_or_verdict_that_mixes_them_says_so():
    runs = {f"dcgan-mnist-s{i}": view(f"dcgan-mnist-s{i}", i, metrics(v, 0.95)) for i, v in enumerate([200, 210, 205])}
    runs["gan-mnist"] = view("gan-mnist", 0, metrics(900, 0.9), model="gan")
    for i, precision in enumerate(["fp32", "fp32", "bf16"]):
        runs[f"dcgan-mnist-s{i}"].record = record(("cpu", precision))
    runs["gan-mnist"].record = record(("cpu", "fp32"), ("cuda", "bf16"))  # resumed on a GPU
    assert trained_label(runs["dcgan-mnist-s0"]) == "cpu fp32"
    assert trained_label(runs["gan-mnist"]) == "mixed (cpu fp32, cuda bf16)"
    assert trained_label(view("old", 0, None)) == "?"  # no train.json
    text = "\n".join(metric_tables(runs))
    quality = table(text, "Sample quality")
    assert "| cpu bf16 |" in next(r for r in quality if r.startswith("| dcgan-mnist-s2"))
    assert "| mixed (cpu fp32, cuda bf16) |" in next(r for r in quality if r.startswith("| gan-mnist"))
    group = next(r for r in table(text, "Over seeds") if r.startswith("| dcgan-mnist (3 seeds)"))
    assert "| mixes cpu bf16 / cpu fp32 |" in group
    fid = row(verdict_rows(runs), "fid_domain")
    assert "**mixes cpu bf16 / cpu fp32 / mixed (cpu fp32, cuda bf16)**" in fid
    # Runs each resumed elsewhere, alike: still a mix of precisions inside each.
    for name in runs:
        runs[name].record = record(("cpu", "fp32"), ("cuda", "bf16"))
    assert "**mixes mixed (cpu fp32, cuda bf16)**" in row(verdict_rows(runs), "fid_domain")
    # Runs trained alike: no warning.
    runs["dcgan-mnist-s0"].record = record(("cpu", "fp32"))
    runs["dcgan-mnist-s1"].record = record(("cpu", "fp32"))
    runs["dcgan-mnist-s2"].record = record(("cpu", "fp32"))
    runs["gan-mnist"].record = record(("cpu", "fp32"))
    assert "mixes" not in row(verdict_rows(runs), "fid_domain")
    # A seed not trained yet (a Results profile built in steps) mixes nothing into its group.
    runs["dcgan-mnist-s2"] = view("dcgan-mnist-s2", 2, None)
    group = next(r for r in table("\n".join(metric_tables(runs)), "Over seeds") if r.startswith("| dcgan-mnist (3 seeds)"))
    assert "| cpu fp32 |" in group and "mixes" not in group
    # Its means are over the two evaluated seeds, and the row says which one is missing.
    assert "| dcgan-mnist-s0, dcgan-mnist-s1 (not evaluated yet: dcgan-mnist-s2) |" in group
    assert "mixes" not in row(verdict_rows(runs), "fid_domain")  # nor into a verdict on the group's mean


def test_the_standard_fid_curve_is_tabled_with_spreads_per_run_and_per_seed_group(tmp_path):
    runs = tmp_path / "runs"
    spec = {f"dcgan-mnist-s{seed}": {"model": "dcgan", **MNIST, "seed": seed, "epochs": 20} for seed in range(3)}
    spec["dcgan-mnist-e200"] = {"model": "dcgan", **MNIST, "seed": 0, "epochs": 200}
    # (epoch, fid) per run: the seeds' curves are lowest at epoch 10 on average, seed 2's at 5.
    curves = {"dcgan-mnist-s0": [(1, 150), (5, 40), (10, 30), (20, 31)],
              "dcgan-mnist-s1": [(1, 160), (5, 44), (10, 32), (20, 35)],
              "dcgan-mnist-s2": [(1, 140), (5, 30), (10, 34), (20, 33)],
              "dcgan-mnist-e200": [(1, 150), (20, 31), (200, 12)]}
    for name, points in curves.items():
        fake_run(runs / name, metrics(100, 0.95), int(name[-1]) if name[-2] == "s" else 0, curve=False)
        (runs / name / "curve.tsv").write_text("epoch\tfid\tfid_std\tfid_domain\n" + "".join(
            f"{epoch}\t{fid}\t0.5\t{10 * fid}\n" for epoch, fid in points))
        (runs / name / "eval" / "protocol.json").write_text(json.dumps({"curve": {"samples": 2500}}))
    text = build_report(Params(runs=spec), runs, tmp_path / "reports").read_text()
    rows = table(text, "Standard FID over training")
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[1:8] == ["epoch 1", "epoch 5", "epoch 10", "epoch 20", "epoch 200", "lowest at epoch",
                           "samples per point"]
    group = dict(zip(header, (c.strip() for c in next(r for r in rows if r.startswith("| dcgan-mnist (3 seeds): mean |")).strip("|").split("|"))))
    assert group["epoch 5"] == "38.0 ± 4.2"  # mean of 40, 44, 30 ± std (7.21) / sqrt(3)
    assert group["lowest at epoch"] == "10" and group["epoch 200"] == "" and group["headline epoch"] == "20"
    seed2 = dict(zip(header, (c.strip() for c in next(r for r in rows if r.startswith("| dcgan-mnist-s2 ")).strip("|").split("|"))))
    assert seed2["epoch 5"] == "30.0 ± 0.5" and seed2["lowest at epoch"] == "5"
    long = dict(zip(header, (c.strip() for c in next(r for r in rows if r.startswith("| dcgan-mnist-e200 ")).strip("|").split("|"))))
    assert long["epoch 200"] == "12.0 ± 0.5" and long["epoch 5"] == "" and long["lowest at epoch"] == "200"
    assert long["samples per point"] == "2500" and long["headline epoch"] == "200"
    assert "headline numbers stay the last epoch's" in text
    section = text.split("## Standard FID over training")[1]
    assert "](figures/fid.png)" in section and (tmp_path / "reports" / "figures" / "fid.png").stat().st_size > 1000
    assert "](figures/fid_domain.png)" in text


def test_a_seed_group_is_drawn_as_its_mean_with_the_seeds_range_and_other_runs_alone():
    from pipeline.report import eval_curve_figure

    runs = {f"dcgan-mnist-s{seed}": view(f"dcgan-mnist-s{seed}", seed, None) for seed in range(2)}
    runs["dcgan-mnist-s0"].eval_curves = {"fid": ([1, 5, 20], [150.0, 40.0, 30.0])}
    runs["dcgan-mnist-s1"].eval_curves = {"fid": ([1, 5], [170.0, 50.0])}  # its evaluation stopped early
    runs["gan-mnist"] = view("gan-mnist", 0, None, "gan")
    runs["gan-mnist"].eval_curves = {"fid": ([1, 20], [300.0, 200.0])}
    figure = eval_curve_figure(runs, seed_groups(runs), "fid", "FID")
    ax = figure.axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert lines == {"dcgan-mnist (2 seeds): mean, seed range": ([1, 5], [160.0, 45.0]), "gan-mnist": ([1, 20], [300.0, 200.0])}
    (band,) = ax.collections  # the group's range: from its lowest seed to its highest at each epoch
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == 40.0 and ys.max() == 170.0
    assert eval_curve_figure(runs, {}, "fid_domain", "FID (domain)") is None


def test_what_training_cost_comes_from_train_json():
    from pipeline.report import training_cost_lines

    runs = {"dcgan-mnist": view("dcgan-mnist", 0, metrics(200, 0.95)), "old": view("old", 0, None)}
    runs["dcgan-mnist"].record = {**record(("cpu", "bf16")), "train_seconds": 5430.0, "seconds_per_epoch": 45.2,
                                  "images_per_s": 1327.4, "epochs": [{"epoch": e} for e in range(1, 121)]}
    (row,) = [line for line in training_cost_lines(runs) if line.startswith("| dcgan-mnist")]
    assert row == "| dcgan-mnist | cpu bf16 | CPU | 120 | 1:30 | 45.2 | 1,327 |"
    assert training_cost_lines({"old": runs["old"]}) == []  # no record, no table
    # Two CPUs of one model name, told apart by what makes one several times faster.
    for seed, capability in ((1, "AVX2"), (2, "AVX512")):
        runs[f"dcgan-mnist-s{seed}"] = view(f"dcgan-mnist-s{seed}", seed, metrics(200, 0.95))
        runs[f"dcgan-mnist-s{seed}"].record = {
            "stretches": [{"device": {"kind": "cpu", "name": "AMD EPYC", "capability": capability, "threads": 2},
                           "precision": "fp32"}],
            "train_seconds": 4000.0, "seconds_per_epoch": 200.0, "images_per_s": 300.0, "epochs": [{"epoch": 1}]}
    cells = {line.split(" | ")[0]: line.split(" | ")[2] for line in training_cost_lines(runs) if line.startswith("| dcgan")}
    assert cells["| dcgan-mnist-s1"] == "AMD EPYC (AVX2, 2 threads)"
    assert cells["| dcgan-mnist-s2"] == "AMD EPYC (AVX512, 2 threads)"


def with_resamples(run: RunView, resamples: np.ndarray, seed: int = 0) -> RunView:
    run.details = {"probe": {"bootstrap": {"seed": seed, "resamples": len(resamples)}, "test_images": 600,
                             "paired": {"probe_vs_random_d": {"resamples": list(resamples)}}}}
    return run


def test_a_groups_paired_difference_includes_the_test_noise_its_seeds_share():
    """Three seeds with nearly the same paired difference (+0.005) on the same test images: the
    t-test over seeds alone sees almost no noise. Their bootstrap resamples move together (shared
    test images), and that shared noise must widen the group's error."""
    gains = [0.0050, 0.0052, 0.0048]
    runs = {f"d-s{i}": view(f"d-s{i}", i, metrics(200, 0.95, probe_vs_random_d=g, probe_vs_random_d_ci95=0.006))
            for i, g in enumerate(gains)}
    alone = next(line for line in control_lines(runs, seed_groups(runs)) if "random D" in line and "seeds" in line)
    assert "shared noise not included" in alone
    shared = np.random.default_rng(0).normal(0, 0.003, 1000)  # the test images' draw, common to all seeds
    for i, g in enumerate(gains):
        with_resamples(runs[f"d-s{i}"], g + shared + np.random.default_rng(i + 1).normal(0, 0.0005, 1000))
    row = next(line for line in control_lines(runs, seed_groups(runs)) if "random D" in line and "seeds" in line)
    assert "joint bootstrap across the seeds" in row
    se = float(row.split("±")[1].split("|")[0])
    assert se >= 0.0029  # at least the shared test noise (sd 0.003 of the mean), not the seeds' 0.0001
    p_alone, p_joint = (float(line.split("|")[5]) for line in (alone, row))
    assert p_alone < 0.01 and p_joint > 0.05 and "within noise" in row
    # Resamples from another bootstrap (another seed) cannot be combined: back to the seeds alone.
    with_resamples(runs["d-s2"], gains[2] + shared, seed=7)
    assert "shared noise not included" in next(line for line in control_lines(runs, seed_groups(runs))
                                               if "random D" in line and "seeds" in line)

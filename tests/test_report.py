"""The report page: every run gets a row with its spreads, seeds are grouped, differences are
judged against their noise, grids side by side, curves from real DVCLive logs and curve.tsv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dvclive import Live
from PIL import Image

from pipeline.config import Params
from pipeline.report import Estimate, build_report, compare, read_curves, seed_groups, collect_runs

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
    assert "950.00 ± 50.00" in group  # mean ± std across seeds
    verdicts = table(text, "Which differences are beyond noise")
    fid = next(r for r in verdicts if "| fid_domain |" in r)
    assert "**yes**: dcgan-mnist (3 seeds) is better" in fid and "seeds" in fid
    probe = next(r for r in verdicts if "| probe_acc |" in r)
    assert "no: within noise" in probe  # 0.001 apart, seed std 0.001


def test_compare_says_within_noise_only_when_it_is():
    a, b = Estimate(10.0, 1.0, "sampling"), Estimate(12.0, 1.0, "sampling")
    diff, noise, beyond = compare(a, b)
    assert diff == -2.0 and noise == np.sqrt(2) and beyond is False  # 2 < 2 * 1.41
    assert compare(a, Estimate(13.0, 1.0, "sampling"))[2] is True  # 3 > 2.83
    assert compare(a, Estimate(13.0, None, "sampling"))[2] is None  # no spread: no verdict


def test_curves_are_read_from_dvclive_tsv(tmp_path):
    fake_run(tmp_path / "run", None, seed=2)
    curves = read_curves(tmp_path / "run" / "dvclive")
    assert curves["loss_g"] == ([0.0, 1.0, 2.0], [4.0, 5.0, 6.0])

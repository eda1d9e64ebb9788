"""The report page: every run gets a row, grids side by side, curves from real DVCLive logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dvclive import Live
from PIL import Image

from pipeline.config import Params
from pipeline.report import build_report, read_curves

RUNS = {
    "gan-mnist": {"model": "gan", "dataset": "mnist", "epochs": 3},
    "dcgan-mnist": {"model": "dcgan", "dataset": "mnist", "epochs": 3},
    "dcgan-anime": {"model": "dcgan", "dataset": "anime", "epochs": 3},
}


def fake_run(folder: Path, metrics: dict | None, seed: int) -> None:
    """What train and evaluate leave behind: weights marker, a grid, DVCLive logs, metrics.json."""
    (folder / "samples").mkdir(parents=True)
    (folder / "generator.pt").write_bytes(b"weights")
    pixels = np.random.default_rng(seed).integers(0, 256, (66, 66, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "samples" / "final.png")
    live = Live(dir=str(folder / "dvclive"), save_dvc_exp=False, dvcyaml=False)
    for epoch in range(3):
        live.log_metric("loss_d", 1.0 - 0.1 * epoch)
        live.log_metric("loss_g", 2.0 + seed + epoch)
        if epoch % 2 == 0:
            live.log_metric("fid_domain", 50.0 - 10 * epoch + seed)
        live.next_step()
    live.end()
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_has_a_row_per_run_grids_and_curves(tmp_path):
    params = Params(runs=RUNS)
    runs = tmp_path / "runs"
    fake_run(runs / "gan-mnist", {"fid": None, "fid_domain": 41.2345, "kid": 0.01234, "precision": 0.5,
                                  "recall": 0.25, "mode_coverage": 3, "mode_kl": 1.1, "probe_acc": 0.9,
                                  "probe_acc_random_d": 0.8, "probe_acc_pixels": 0.85, "fid_num_samples": 10000,
                                  "fid_num_real": 10000, "fid_antialias": None}, seed=0)
    fake_run(runs / "dcgan-mnist", None, seed=1)  # trained, not evaluated
    # dcgan-anime: not trained at all

    page = build_report(params, runs, tmp_path / "reports")
    text = page.read_text()
    table = text.split("## Metrics")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith(("| gan-mnist", "| dcgan"))]
    assert len(rows) == 3
    gan = next(r for r in rows if r.startswith("| gan-mnist"))
    assert "41.23" in gan and "0.0123" in gan and "| 3 |" in gan and "| – |" in gan  # fid is null
    assert gan.split("|")[-3].strip() == "4.000"  # the last G loss, from DVCLive's metrics.json
    assert "not evaluated" in next(r for r in rows if r.startswith("| dcgan-mnist"))
    assert "not trained" in next(r for r in rows if r.startswith("| dcgan-anime"))

    reports = tmp_path / "reports"
    for name in ("gan-mnist", "dcgan-mnist"):
        assert f"![{name}](samples/{name}.png)" in text
        assert (reports / "samples" / f"{name}.png").read_bytes() == (runs / name / "samples" / "final.png").read_bytes()
    for figure in ("loss_d", "loss_g", "fid_domain"):
        assert f"figures/{figure}.png" in text and (reports / "figures" / f"{figure}.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".reports.tmp-*"))  # no temporary folder left behind

    build_report(params, runs, reports)  # a rebuild replaces the folder
    assert (reports / "index.md").read_text() == text


def test_curves_are_read_from_dvclive_tsv(tmp_path):
    fake_run(tmp_path / "run", None, seed=2)
    curves = read_curves(tmp_path / "run" / "dvclive")
    assert curves["fid_domain"] == ([0.0, 2.0], [52.0, 32.0])
    assert curves["loss_g"][1] == [4.0, 5.0, 6.0]

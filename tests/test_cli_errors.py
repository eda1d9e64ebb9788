"""The CLIs print a user's mistake as one line, and let a bug's traceback through."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.__main__ import main
from pipeline.datasets import SPLITS, read_dataset, verified_record_path, write_dataset

PARAMS = "runs: {gan-mnist: {model: gan, dataset: mnist, device: cpu}}\nevaluate: {device: cpu}\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(PARAMS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_missing_input_is_one_line(workdir, capsys):
    # Evaluating a run that was never trained: its model.json is missing.
    assert main(["evaluate", "gan-mnist"]) == 2
    line = one_error_line(capsys)
    assert "runs/gan-mnist/model.json: not found; train this run first" in line


def test_bad_params_are_one_line(workdir, capsys):
    (workdir / "params.yaml").write_text("runs: {gan-mnist: {model: vae, dataset: mnist}}\n")
    assert main(["train", "gan-mnist"]) == 2
    assert "runs.gan-mnist.model" in one_error_line(capsys)


def test_a_bugs_file_not_found_keeps_its_traceback(workdir, monkeypatch):
    import pipeline.report

    def buggy(*args, **kwargs):
        return open(workdir / "no-such-file-the-code-assumed")  # noqa: SIM115

    monkeypatch.setattr(pipeline.report, "build_report", buggy)
    with pytest.raises(FileNotFoundError, match="no-such-file-the-code-assumed"):
        main(["report"])


def test_crawler_cli_params_error_is_one_line_and_a_bug_is_not(tmp_path, monkeypatch, capsys):
    from crawlers.__main__ import main as crawl_main

    assert crawl_main(["crawl", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: not found" in one_error_line(capsys)

    import crawlers.crawl

    def buggy(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "state.json")

    monkeypatch.setattr(crawlers.crawl, "run_crawl", buggy)
    (tmp_path / "params.yaml").write_text(PARAMS)
    with pytest.raises(FileNotFoundError):
        crawl_main(["crawl", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "raw")])


def small_dataset(folder):
    images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    return write_dataset(folder, images, np.full(4, SPLITS["train"], np.uint8), source="unit")


def test_verify_dataset_rehashes_what_the_record_calls_verified(tmp_path, monkeypatch, capsys):
    from pipeline import datasets

    monkeypatch.setattr(datasets, "RACY_NS", 0)
    out = small_dataset(tmp_path / "ds")
    read_dataset(out)  # records the arrays' identities
    assert main(["verify-dataset", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: ok (4 images, images, split match meta.json)"

    # A change the identity cannot see (here: the record rewritten to the altered file's
    # identity, as a tool that restores mtime and ctime could leave it): the cheap open trusts
    # the record, the full check does not.
    raw = bytearray((out / "images.npy").read_bytes())
    raw[-1] ^= 0xFF
    (out / "images.npy").write_bytes(bytes(raw))
    record = json.loads(verified_record_path(out).read_text())
    record["images"]["file"] = datasets._identity(out / "images.npy")
    verified_record_path(out).write_text(json.dumps(record))
    read_dataset(out)
    assert main(["verify-dataset", str(out)]) == 2
    assert "images.npy: sha256 does not match meta.json" in one_error_line(capsys)

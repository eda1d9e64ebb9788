"""`python -m pipeline results --only`: a long profile built in steps (the commands it runs)."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest

import pipeline.results as results_module
from pipeline.config import ParamsError, load_params
from pipeline.smoke import REPO


@pytest.fixture
def fake_copy(tmp_path, monkeypatch):
    """The copy results works in, with params.results.yaml as its params.yaml; commands recorded."""
    dest = tmp_path / "repo"
    (dest / "reports").mkdir(parents=True)
    (dest / "reports" / "index.md").write_text("# page\n")
    shutil.copy(REPO / "params.results.yaml", dest / "params.yaml")
    commands = []

    @contextlib.contextmanager
    def smoke_repo(workdir, params_file):
        assert params_file == results_module.RESULTS_PARAMS
        yield dest, {}

    monkeypatch.setattr(results_module, "smoke_repo", smoke_repo)
    monkeypatch.setattr(results_module, "run", lambda cmd, cwd, env: commands.append(cmd[1:] if "python" in cmd[0]
                                                                                        else cmd))
    return commands


def test_only_reproduces_the_matching_runs_then_builds_the_page(tmp_path, fake_copy):
    out = results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["*-s?"])
    twenty = [name for name in load_params(REPO / "params.results.yaml").runs if not name.endswith("e200")]
    assert len(twenty) == 9  # 3 groups x 3 seeds
    assert fake_copy[0] == ["dvc", "repro", *(f"evaluate@{name}" for name in twenty)]
    assert fake_copy[1] == ["-m", "pipeline", "report"]  # not `dvc repro report`, which would train every run
    page = (out / "index.md").read_text().splitlines()
    # The page says which params it shows (in the copy they were its params.yaml) and how it was made.
    assert page[0] == "# page" and "params.results.yaml" in page[2] and "--only *-s?" in page[2]


def test_without_only_the_report_stage_reproduces_everything(tmp_path, fake_copy):
    results_module.results(tmp_path / "work", out=tmp_path / "docs")
    assert fake_copy == [["dvc", "repro", "report"]]


def test_a_pattern_matching_nothing_is_a_params_error(tmp_path, fake_copy):
    with pytest.raises(ParamsError, match="no run matches --only nope"):
        results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["nope"])
    assert fake_copy == []


def test_archived_runs_still_current_are_restored_not_reproduced(tmp_path, fake_copy, monkeypatch):
    calls = {}

    def restore(archive, dest, runs, source_root):
        calls["restore"] = (archive, list(runs))
        return ["gan-mnist-s0"], {"dcgan-mnist-s0": "train@dcgan-mnist-s0: source pipeline/train.py changed"}

    monkeypatch.setattr(results_module, "restore", restore)
    for name in ("gan-mnist-e200", "dcgan-mnist-s0"):  # archived by earlier steps
        (tmp_path / "docs" / "runs" / name).mkdir(parents=True)
        (tmp_path / "docs" / "runs" / name / "provenance.json").write_text("{}")
    out = results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["*-s0"])
    # Replacing the page keeps what this step did not redo, and drops what is stale.
    assert (out / "runs" / "gan-mnist-e200" / "provenance.json").is_file()
    assert not (out / "runs" / "dcgan-mnist-s0").exists()
    # Every run of the profile is looked up in the archive beside the page, before anything runs.
    assert calls["restore"] == (tmp_path / "docs" / "runs", list(load_params(REPO / "params.results.yaml").runs))
    # The restored run is not recomputed; the stale one is, since --only names it.
    assert fake_copy[0] == ["dvc", "repro", "evaluate@dcgan-mnist-s0", "evaluate@dcgan-mnist-ema-s0"]
    note = (out / "index.md").read_text().splitlines()[2]
    assert "gan-mnist-s0" in note.split("provenance.json")[1]
    assert "dcgan-mnist-s0 (train@dcgan-mnist-s0: source pipeline/train.py changed)" in note

    fake_copy.clear()
    results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["gan-mnist-s0"])
    assert fake_copy == [["-m", "pipeline", "report"]]  # all it names is restored: only the page is built


def test_runs_the_work_copy_made_before_a_change_are_left_off_the_page(tmp_path, fake_copy, monkeypatch):
    calls = {}

    def outdated_in_copy(dest, runs, archive, source_root):
        calls["outdated"] = list(runs)
        return {"gan-mnist-s1": "its outputs in the work copy predate a change to evaluate@gan-mnist-s1 (dvc status)"}

    monkeypatch.setattr(results_module, "outdated_in_copy", outdated_in_copy)
    # gan-mnist-s1 was made in this work copy, so restore leaves it to DVC.
    monkeypatch.setattr(results_module, "restore", lambda archive, dest, runs, source_root: ([], {}))
    (tmp_path / "docs" / "runs" / "gan-mnist-s1").mkdir(parents=True)  # archived by an earlier step
    (tmp_path / "docs" / "runs" / "gan-mnist-s1" / "provenance.json").write_text("{}")
    out = results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["gan-mnist-s0"])
    # Asked of every run this step neither restores nor reproduces, after the step's own `dvc repro`.
    assert "gan-mnist-s0" not in calls["outdated"] and "gan-mnist-s1" in calls["outdated"]
    assert fake_copy == [["dvc", "repro", "evaluate@gan-mnist-s0"],
                         ["-m", "pipeline", "report", "--leave-out", "gan-mnist-s1"]]
    note = (out / "index.md").read_text().splitlines()[2]
    assert "gan-mnist-s1 (its outputs in the work copy predate a change" in note
    assert not (out / "runs" / "gan-mnist-s1").exists()  # its archive was of the old experiment too


def test_runs_the_work_copy_already_holds_up_to_date_are_not_counted_as_reproduced(tmp_path, fake_copy, monkeypatch):
    asked = {}

    def current_in_copy(dest, runs):
        asked["runs"] = list(runs)
        return ["gan-mnist-s0"]

    monkeypatch.setattr(results_module, "current_in_copy", current_in_copy)
    out = results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["gan-mnist-s?"])
    assert asked["runs"] == ["gan-mnist-s0", "gan-mnist-s1", "gan-mnist-s2"]
    # DVC still decides (a no-op for the current run); the ledger says what this step computed.
    assert fake_copy[0] == ["dvc", "repro", "evaluate@gan-mnist-s0", "evaluate@gan-mnist-s1", "evaluate@gan-mnist-s2"]
    step = json.loads((out / "runs" / "steps.json").read_text())[-1]
    assert step["reproduced"] == ["gan-mnist-s1", "gan-mnist-s2"] and step["current_in_work_copy"] == ["gan-mnist-s0"]
    note = (out / "index.md").read_text().splitlines()[2]
    assert "still the experiment of this checkout, so not recomputed: gan-mnist-s0." in note


def test_the_page_names_the_runs_earlier_steps_made_in_the_work_copy(tmp_path, fake_copy, monkeypatch):
    # Two runs an earlier step evaluated in this copy (metrics.json, no restore's provenance.json);
    # one of them predates a change to the checkout.
    for name in ("dcgan-mnist-s2", "gan-mnist-e200"):
        (tmp_path / "repo" / "runs" / name).mkdir(parents=True)
        (tmp_path / "repo" / "runs" / name / "metrics.json").write_text("{}")
    monkeypatch.setattr(results_module, "outdated_in_copy", lambda dest, runs, archive, source_root:
                        {"dcgan-mnist-s2": "its outputs in the work copy predate a change"})
    # Archiving reads DVC's lock for provenance; this copy is no DVC repo (tests/test_results_archive.py has one).
    monkeypatch.setattr(results_module, "archive_runs", lambda dest, names, target, **kwargs: [])
    out = results_module.results(tmp_path / "work", out=tmp_path / "docs", only=["dcgan-mnist-e200"])
    note = (out / "index.md").read_text().splitlines()[2]
    # The page shows gan-mnist-e200 and says where it came from; the outdated run is named as stale.
    assert "still the experiment of this checkout, so not recomputed: gan-mnist-e200." in note
    assert "Stale" in note and "dcgan-mnist-s2 (its outputs" in note
    step = json.loads((out / "runs" / "steps.json").read_text())[-1]
    assert step["reproduced"] == ["dcgan-mnist-e200"] and step["current_in_work_copy"] == []


def test_each_step_is_recorded_and_the_page_says_what_all_steps_cost(tmp_path, fake_copy):
    out = tmp_path / "docs"
    results_module.results(tmp_path / "work", out=out, only=["gan-mnist-s0"])
    results_module.results(tmp_path / "work", out=out, only=["dcgan-mnist-s?"])
    steps = json.loads((out / "runs" / "steps.json").read_text())
    assert [s["command"] for s in steps] == ["python -m pipeline results --only gan-mnist-s0",
                                             "python -m pipeline results --only dcgan-mnist-s?"]
    assert steps[1]["reproduced"] == ["dcgan-mnist-s0", "dcgan-mnist-s1", "dcgan-mnist-s2"]
    assert all(s["wall_seconds"] >= 0 and s["cpu"] and s["cpu_capability"] and s["finished"].endswith("+00:00") for s in steps)
    note = (out / "index.md").read_text().splitlines()[2]
    assert "Made in 2 steps of `python -m pipeline results`, 0:00 (h:mm) of wall time in all" in note
    # A ledger it cannot read (a bad merge) stops the next step before any work, naming the file.
    (out / "runs" / "steps.json").write_text("{not json")
    fake_copy.clear()
    with pytest.raises(ParamsError, match="steps.json: not JSON"):
        results_module.results(tmp_path / "work", out=out, only=["gan-mnist-s0"])
    assert fake_copy == []

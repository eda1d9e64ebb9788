"""The runs archived beside docs/results: restored on another copy while their experiment is the
same, left out with the reason when anything upstream changed. Real git + DVC on a small DAG of the
project's shape (data -> train@<run> -> evaluate@<run>)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.results_archive import ARCHIVED, PROVENANCE, archive_runs, current_in_copy, forget_restored, \
    keep_archived, outdated_in_copy, restore
from pipeline.smoke import REPO

DVC_YAML = {
    "stages": {
        "prepare": {"cmd": "python prepare.py", "deps": ["prepare.py"], "params": ["data"], "outs": ["data/set"]},
        "train": {"foreach": "${runs}", "do": {
            "cmd": "python train.py ${key}", "deps": ["train.py", "lib", "data/set"], "params": ["runs.${key}"],
            "outs": ["runs/${key}/generator.pt", {"runs/${key}/train.json": {"cache": False}}]}},
        "evaluate": {"foreach": "${runs}", "do": {
            "cmd": "python evaluate.py ${key}", "deps": ["evaluate.py", "runs/${key}/generator.pt", "data/set"],
            "params": ["evaluate.k"], "outs": ["runs/${key}/eval"],
            "metrics": [{"runs/${key}/metrics.json": {"cache": False}}]}},
    }
}
SCRIPTS = {
    # os.urandom: the data differs bit for bit on every run, as the reference statistics do between two CPUs.
    "prepare.py": ("import os; os.makedirs('data/set', exist_ok=True)\n"
                   "open('data/set/x.bin', 'wb').write(os.urandom(64))\n"),
    "train.py": ("import sys, os, json; r = sys.argv[1]; os.makedirs(f'runs/{r}', exist_ok=True)\n"
                 "open(f'runs/{r}/generator.pt', 'wb').write(os.urandom(1024))\n"
                 "json.dump({'device': 'cpu'}, open(f'runs/{r}/train.json', 'w'))\n"),
    "evaluate.py": ("import sys, os, json; r = sys.argv[1]; os.makedirs(f'runs/{r}/eval', exist_ok=True)\n"
                    "json.dump({'protocol': 'test'}, open(f'runs/{r}/eval/protocol.json', 'w'))\n"
                    "json.dump({'fid': len(r)}, open(f'runs/{r}/metrics.json', 'w'))\n"),
    "lib/helper.py": "SCALE = 1\n",  # a directory dependency, as pipeline/models is for train
}
PARAMS = {"data": {"n": 1}, "runs": {"a": {"seed": 0}, "b": {"seed": 1}}, "evaluate": {"k": 5}}


def make_project(root, params=PARAMS):
    root.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")  # the project's own
    commit_all(root, "project")
    return root


def dvc(root, *args):
    # The stages' `python` is this interpreter (the virtualenv's, not on PATH under make).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True, env=env)


@pytest.fixture
def archived(tmp_path):
    """A project whose two runs were reproduced and archived; returns (archive folder, project)."""
    first = make_project(tmp_path / "first")
    dvc(first, "repro", "evaluate@a", "evaluate@b")
    archive = tmp_path / "archive"
    assert archive_runs(first, ["a", "b"], archive, source_root=first) == ["a", "b"]
    return archive, first


def test_an_archived_run_holds_what_the_report_reads_and_its_experiment_not_the_models(archived):
    archive, first = archived
    assert json.loads((archive / "a" / "metrics.json").read_text()) == {"fid": 1}
    assert (archive / "a" / "eval" / "protocol.json").is_file() and (archive / "a" / "train.json").is_file()
    assert not (archive / "a" / "generator.pt").exists()
    record = json.loads((archive / "a" / PROVENANCE).read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=first, capture_output=True, text=True).stdout.strip()
    assert record["revision"] == head
    # The run's stage and everything upstream, each with its command, params and source hashes.
    stages = record["stages"]
    assert set(stages) == {"evaluate@a", "train@a", "prepare"}
    assert stages["train@a"]["params"] == {"runs.a": {"seed": 0}}
    assert stages["prepare"]["params"] == {"data": {"n": 1}}
    assert set(stages["evaluate@a"]["sources"]) == {"evaluate.py"}  # generator.pt and data/set are outputs
    assert set(stages["train@a"]["sources"]) == {"train.py", "lib"}
    assert stages["evaluate@a"]["cmd"] == "python evaluate.py a"


def test_a_fresh_copy_restores_the_runs_although_its_data_differs_bit_for_bit(archived, tmp_path):
    archive, _ = archived
    second = make_project(tmp_path / "second")
    dvc(second, "repro", "prepare")  # new random bytes: another machine's upstream data
    restored, stale = restore(archive, second, ["a", "b"], second)
    assert (restored, stale) == (["a", "b"], {})
    assert json.loads((second / "runs" / "b" / "metrics.json").read_text()) == {"fid": 1}
    assert {p.name for p in (second / "runs" / "a").iterdir()} == {"metrics.json", "train.json", "eval", PROVENANCE}
    # Archived again from the copy, a restored run keeps the record of where it was made.
    again = tmp_path / "again"
    assert archive_runs(second, ["a", "b"], again, source_root=second, restored=restored) == ["a", "b"]
    assert (again / "a" / PROVENANCE).read_text() == (archive / "a" / PROVENANCE).read_text()


def commit_all(root, message):
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def test_a_run_archived_again_by_a_later_step_keeps_the_commit_it_was_made_at(archived, tmp_path):
    """The work copy keeps its finished runs between steps: a later step (a later commit) archives
    them again, and their record must still name the commit that made them, until their
    experiment changes."""
    archive, first = archived
    made_at = json.loads((archive / "a" / PROVENANCE).read_text())["revision"]
    (first / "NOTES.md").write_text("a file no stage reads\n")
    later = commit_all(first, "unrelated")
    again = tmp_path / "again"
    assert archive_runs(first, ["a", "b"], again, source_root=first, previous=archive) == ["a", "b"]
    assert json.loads((again / "a" / PROVENANCE).read_text())["revision"] == made_at != later
    # A real change: the run is made again, at the new commit.
    (first / "evaluate.py").write_text(SCRIPTS["evaluate.py"] + "# changed\n")
    dvc(first, "repro", "evaluate@a", "evaluate@b")
    changed = commit_all(first, "evaluate changed, runs made again")
    third = tmp_path / "third"
    assert archive_runs(first, ["a", "b"], third, source_root=first, previous=again) == ["a", "b"]
    assert json.loads((third / "a" / PROVENANCE).read_text())["revision"] == changed


@pytest.mark.parametrize(("change", "stale"), [
    (lambda p: (p / "evaluate.py").write_text(SCRIPTS["evaluate.py"] + "# changed\n"),
     {"a": "evaluate@a: source evaluate.py changed", "b": "evaluate@b: source evaluate.py changed"}),
    (lambda p: (p / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "runs": {"a": {"seed": 7}, "b": {"seed": 1}}})),
     {"a": "train@a: param runs.a changed"}),
    (lambda p: (p / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "data": {"n": 2}})),  # upstream of both
     {"a": "prepare: param data changed", "b": "prepare: param data changed"}),
])
def test_a_change_anywhere_upstream_makes_the_run_stale_with_the_reason(archived, tmp_path, change, stale):
    archive, _ = archived
    second = make_project(tmp_path / "second")
    change(second)
    restored, found = restore(archive, second, ["a", "b"], second)
    assert found == stale
    assert restored == [r for r in ("a", "b") if r not in stale]
    for name in stale:
        assert not (second / "runs" / name / "metrics.json").exists()


def test_a_run_this_copy_produces_is_never_overwritten_by_the_archive(archived, tmp_path):
    archive, _ = archived
    second = make_project(tmp_path / "second")
    dvc(second, "repro", "train@a")  # DVC's own run here: its train@a entry in dvc.lock
    assert restore(archive, second, ["a", "b"], second) == (["b"], {})
    assert not (second / "runs" / "a" / "metrics.json").exists()


def test_outputs_older_than_the_code_are_not_archived(tmp_path):
    project = make_project(tmp_path / "p")
    dvc(project, "repro", "evaluate@a")
    (project / "evaluate.py").write_text(SCRIPTS["evaluate.py"] + "# changed after the run\n")
    assert archive_runs(project, ["a"], tmp_path / "archive", source_root=project) == []


def test_runs_a_work_copy_made_before_a_change_are_outdated_unless_the_experiment_is_the_archived_one(archived):
    archive, first = archived  # a and b reproduced in `first` and archived from there
    assert outdated_in_copy(first, ["a", "b"], archive, first) == {}
    # A new dependency on an upstream output: DVC finds both stale, the experiment is the archived one.
    spec = yaml.safe_load((first / "dvc.yaml").read_text())
    spec["stages"]["evaluate"]["do"]["deps"].append("runs/${key}/train.json")
    (first / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert outdated_in_copy(first, ["a", "b"], archive, first) == {}
    # A source change: the experiment differs, with or without an archived record (b's is gone).
    shutil.rmtree(archive / "b")
    (first / "evaluate.py").write_text(SCRIPTS["evaluate.py"] + "# changed after the run\n")
    outdated = outdated_in_copy(first, ["a", "b"], archive, first)
    assert set(outdated) == {"a", "b"} and "evaluate@a" in outdated["a"], outdated
    # A run this copy did not evaluate is not its to judge.
    (first / "runs" / "b" / "metrics.json").unlink()
    assert set(outdated_in_copy(first, ["a", "b"], archive, first)) == {"a"}


def test_runs_a_work_copy_holds_up_to_date_are_current_and_a_change_or_a_restore_is_not(archived, tmp_path):
    archive, first = archived  # a and b reproduced in `first`
    assert current_in_copy(first, ["a", "b"]) == ["a", "b"]
    (first / "lib" / "helper.py").write_text("SCALE = 2\n")  # upstream of train, so of evaluate
    assert current_in_copy(first, ["a", "b"]) == []
    second = make_project(tmp_path / "second")
    dvc(second, "repro", "evaluate@b")
    restore(archive, second, ["a"], second)  # a is the archive's, not this copy's
    assert current_in_copy(second, ["a", "b"]) == ["b"]


def test_forget_restored_clears_a_restored_run_before_dvc_produces_it(archived, tmp_path):
    archive, _ = archived
    second = make_project(tmp_path / "second")
    restore(archive, second, ["a"], second)
    (second / "runs" / "a" / "checkpoint.pt").write_bytes(b"DVC's own")  # not from the archive: kept
    forget_restored(second, ["a"])
    left = {p.name for p in (second / "runs" / "a").iterdir()}
    assert left == {"checkpoint.pt"} and not set(ARCHIVED) & left


def test_bytecode_in_a_source_folder_changes_nothing(archived, tmp_path):
    # Python writes lib/__pycache__ when a stage imports lib: not a change to the experiment (.dvcignore).
    archive, _ = archived
    second = make_project(tmp_path / "second")
    (second / "lib" / "__pycache__").mkdir()
    (second / "lib" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(os.urandom(32))
    assert restore(archive, second, ["a"], second) == (["a"], {})
    (second / "lib" / "helper.py").write_text("SCALE = 2\n")
    assert restore(archive, second, ["a"], second) == ([], {"a": "train@a: source lib changed"})


def test_a_data_path_is_compared_as_the_profile_writes_it_relative_to_the_checkout(tmp_path):
    # Two checkouts at different places, each with its data beside it: the same experiment.
    def project(home):
        return make_project(home / "repo", {**PARAMS, "data": {"n": 1, "source": str(home / "data")}})
    first = project(tmp_path / "one")
    dvc(first, "repro", "evaluate@a")
    archive = tmp_path / "archive"
    assert archive_runs(first, ["a"], archive, source_root=first) == ["a"]
    prepare = json.loads((archive / "a" / PROVENANCE).read_text())["stages"]["prepare"]
    assert prepare["params"] == {"data": {"n": 1, "source": "../data"}}
    assert restore(archive, project(tmp_path / "two"), ["a"], tmp_path / "two" / "repo") == (["a"], {})
    elsewhere = make_project(tmp_path / "three" / "repo", {**PARAMS, "data": {"n": 1, "source": "/elsewhere"}})
    restored, stale = restore(archive, elsewhere, ["a"], elsewhere)
    assert restored == [] and stale == {"a": "prepare: param data changed"}


def test_a_leftover_record_of_an_earlier_restore_is_not_trusted(archived, tmp_path):
    archive, _ = archived
    second = make_project(tmp_path / "second")
    restore(archive, second, ["a"], second)
    # Not restored in this step (say the archive was replaced): DVC must vouch for the run, and it cannot.
    assert archive_runs(second, ["a"], tmp_path / "again", source_root=second, restored=[]) == []


def test_an_unreadable_record_is_stale_not_a_crash(archived, tmp_path):
    archive, _ = archived
    (archive / "a" / PROVENANCE).write_text("{}")
    second = make_project(tmp_path / "second")
    restored, stale = restore(archive, second, ["a", "b"], second)
    assert restored == ["b"] and "unreadable" in stale["a"]


def test_keep_archived_carries_over_what_this_step_did_not_redo(archived, tmp_path):
    archive, _ = archived
    into = tmp_path / "new"
    assert keep_archived(archive, into, ["a", "c"]) == ["a"]  # c was never archived
    assert (into / "a" / PROVENANCE).read_bytes() == (archive / "a" / PROVENANCE).read_bytes()


def test_relative_folders_mean_the_callers_working_directory(tmp_path, monkeypatch):
    # DVC is opened from inside the project: a relative `into` (as `--out docs/...` gives) must not land there.
    project = make_project(tmp_path / "p")
    dvc(project, "repro", "evaluate@a")
    monkeypatch.chdir(tmp_path)
    assert archive_runs(Path("p"), ["a"], Path("archive"), source_root=project) == ["a"]
    assert (tmp_path / "archive" / "a" / PROVENANCE).is_file() and not (project / "archive").exists()
    second = make_project(tmp_path / "second")
    assert restore(Path("archive"), Path("second"), ["a"], second) == (["a"], {})
    assert (second / "runs" / "a" / "metrics.json").is_file()


@pytest.mark.parametrize(("trained_at", "pinned", "stale"), [
    ("fp32", "fp32", {}),  # auto meant fp32 there: pinning fp32 keeps the same experiment
    ("fp32", "auto", {}),  # nothing pinned: the params are unchanged
    ("bf16", "fp32", {"a": "train@a: param runs.a changed"}),  # auto meant bf16: another experiment
    ("fp32", "bf16", {"a": "train@a: param runs.a changed"}),
    ("mixed", "fp32", {"a": "train@a: param runs.a changed"}),  # resumed on another machine at bf16
])
def test_a_precision_pinned_to_what_auto_resolved_to_keeps_the_archived_run(tmp_path, trained_at, pinned, stale):
    params = {**PARAMS, "runs": {"a": {"seed": 0, "precision": "auto"}}}
    first = make_project(tmp_path / "first", params)
    dvc(first, "repro", "evaluate@a")
    archive = tmp_path / "archive"
    assert archive_runs(first, ["a"], archive, source_root=first) == ["a"]
    stretches = [{"precision": "fp32"}, {"precision": "bf16"}] if trained_at == "mixed" else [{"precision": trained_at}]
    (archive / "a" / "train.json").write_text(json.dumps({"stretches": stretches}))
    second = make_project(tmp_path / "second", {**PARAMS, "runs": {"a": {"seed": 0, "precision": pinned}}})
    restored, found = restore(archive, second, ["a"], second)
    assert (restored, found) == ([] if stale else ["a"], stale)
    if not stale:  # the record is restored as it was made: with the auto it trained with
        record = json.loads((second / "runs" / "a" / PROVENANCE).read_text())
        assert record["stages"]["train@a"]["params"]["runs.a"]["precision"] == "auto"

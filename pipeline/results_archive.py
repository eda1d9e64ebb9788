"""The runs behind docs/results, kept beside the page: a Results profile that takes days is built in
steps, on whatever machine each step gets, and a lost work copy loses no finished run.

`docs/results/runs/<run>/` holds what the report reads of each evaluated run (ARCHIVED: metrics,
curve, train.json with its device and times, DVCLive's logs, eval/ with protocol.json, the last
sample grid) and `provenance.json`: the experiment that produced it, as DVC defines it. That is
the run's `evaluate@<run>` stage and every stage upstream of it (train, ingest, the reference
statistics, the domain classifier), each with its command, the values of the params it tracks
and the DVC hashes of its source dependencies (the files in git, never an upstream stage's
output). A later `python -m pipeline results --only ...` shows an archived run only while that
provenance equals the one the current checkout defines; a changed source file, param or command
anywhere upstream makes it stale, and it is left out of the page with the reason printed (one
exception: a run trained with `precision: auto` stays current when the profile has since pinned
the precision auto resolved to in every stretch of its train.json; `as_trained`).

Why not DVC's own lock and cache: the big outputs (checkpoints, G's snapshots) are what must not go
into git, and upstream *data* hashes differ between CPUs (the fp32 Inception's reference
statistics are not bit-identical on two machines), so a lock-file comparison would reject every
run made on another machine. The definition of the experiment is what must match, and DVC still
computes every hash and resolves every stage here (`Repo.stage.collect`, `Dependency.get_hash`;
.dvcignore keeps Python's bytecode out of the source folders' hashes). Paths in params are
recorded relative to the checkout, as params.results.yaml writes them (`portable`): a data
source is the same one on a checkout at another place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from pipeline.atomic import write_json_atomic

# What the report reads of runs/<run>/ (pipeline/report.py collect_runs and the files it copies),
# plus model.json (the networks' shapes, for readers): small enough for git; never the
# checkpoints, generators or snapshots.
ARCHIVED = ("metrics.json", "curve.tsv", "train.json", "model.json", "dvclive", "eval", "samples/final.png")
PROVENANCE = "provenance.json"


@contextlib.contextmanager
def _open(root: Path):
    """The DVC repo at `root`, entered: DVC resolves stage names against the current directory (so
    every path used inside must be absolute)."""
    from dvc.repo import Repo  # imported here: a second or two that only results needs

    with contextlib.chdir(root), Repo(".") as repo:
        yield repo


def portable(value, root: Path):
    """`value` with every absolute path made relative to `root`, the checkout whose profile was
    resolved against it (pipeline.smoke.smoke_params): `../shared/data/mnist` as
    params.results.yaml writes it, the same experiment on a checkout at another place."""
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, root) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, root)
    return value


def provenance(repo, target: str, root: Path) -> dict:
    """{stage: {cmd, params, sources}} for `target` and every stage upstream of it, as the checkout
    in `repo` (a dvc.repo.Repo) defines them now, paths relative to `root` (portable). Needs no
    output of any stage."""
    stages = list(repo.stage.collect(target, with_deps=True))  # DVC's own walk of the DAG upstream
    outs = [out.def_path.rstrip("/") for stage in stages for out in stage.outs]
    record: dict[str, dict] = {}
    for stage in stages:
        entry: dict = {"cmd": stage.cmd, "params": {}, "sources": {}}
        for dep in stage.deps:
            if hasattr(dep, "read_params"):  # a ParamsDependency: the values of its tracked keys
                entry["params"].update(dep.read_params())
            elif not any(dep.def_path == o or dep.def_path.startswith(o + "/") for o in outs):  # not an upstream output
                entry["sources"][dep.def_path] = dep.get_hash().value
        record[stage.addressing] = entry
    return portable(dict(sorted(record.items())), root)


def git_revision(repo_root: Path) -> str | None:
    """The commit the results were made from, with '+dirty' for uncommitted changes (for readers;
    validity is decided by the provenance, not by this)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo_root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def _copy_run(src: Path, dst: Path) -> None:
    for name in ARCHIVED:
        item = src / name
        if item.is_dir():
            shutil.copytree(item, dst / name, dirs_exist_ok=True)
        elif item.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dst / name)


def _remove_archived_files(folder: Path) -> None:
    for name in ARCHIVED:
        item = folder / name
        shutil.rmtree(item) if item.is_dir() else item.unlink(missing_ok=True)


def first_difference(archived: dict, current: dict) -> str | None:
    """Why an archived provenance is not the current one (the first difference found), or None."""
    for stage in sorted(set(archived) | set(current)):
        if stage not in current:
            return f"stage {stage} is no longer upstream"
        if stage not in archived:
            return f"stage {stage} is new upstream"
        old, new = archived[stage], current[stage]
        if old["cmd"] != new["cmd"]:
            return f"{stage}: command changed"
        for kind in ("params", "sources"):
            for key in sorted(set(old[kind]) | set(new[kind])):
                if old[kind].get(key, "<absent>") != new[kind].get(key, "<absent>"):
                    return f"{stage}: {'param' if kind == 'params' else 'source'} {key} changed"
    return None


# Training knobs whose `auto` each stretch of train.json records resolved. A run archived with
# `precision: auto` that meant fp32 in every stretch is the experiment a profile pinning
# `precision: fp32` defines: pinning it (so that every machine trains the same experiment, whatever
# its bf16 support) must not discard the runs already made, and must discard one where auto meant bf16.
RESOLVED_IN_TRAIN_JSON = ("precision",)


def as_trained(archived: dict, current: dict, train_json: Path) -> dict:
    """`archived` (a provenance's stages) with each `auto` of RESOLVED_IN_TRAIN_JSON in its training
    params replaced by the value it resolved to in every stretch of `train_json`, where the current
    params pin exactly that value; unchanged otherwise (so `first_difference` decides as before)."""
    try:
        stretches = json.loads(Path(train_json).read_text())["stretches"]
    except (OSError, ValueError, KeyError, TypeError):
        return archived
    out = json.loads(json.dumps(archived))  # a copy: the record itself stays as it was archived
    for stage, entry in out.items():
        if not stage.startswith("train@") or stage not in current:
            continue
        for key, params in entry["params"].items():
            now = current[stage]["params"].get(key)
            if not (isinstance(params, dict) and isinstance(now, dict)):
                continue
            for knob in RESOLVED_IN_TRAIN_JSON:
                resolved = {s.get(knob) for s in stretches if isinstance(s, dict)}
                if (params.get(knob) == "auto" and now.get(knob) != "auto" and stretches
                        and resolved == {now.get(knob)}):
                    params[knob] = now[knob]
    return out


def _read_record(path: Path, source_root: Path) -> dict:
    """An archived provenance.json, its stages' paths relative to `source_root` (portable).
    Raises OSError, ValueError, KeyError or TypeError for a file that is not such a record."""
    record = json.loads(path.read_text())
    return {**record, "stages": portable(record["stages"], source_root)}


def forget_restored(dest: Path, runs: list[str]) -> None:
    """Removes what an earlier restore put into dest/runs/<run> for runs DVC is about to produce:
    train's outputs persist, so a restored train.json or DVCLive log would otherwise be continued."""
    for name in runs:
        folder = dest / "runs" / name
        if (folder / PROVENANCE).is_file():
            _remove_archived_files(folder)
            (folder / PROVENANCE).unlink()


def restore(archive: Path, dest: Path, runs: list[str], source_root: Path) -> tuple[list[str], dict[str, str]]:
    """Copies each archived run of `runs` whose provenance is current into dest/runs/<run>
    (`source_root`: the checkout the copy's params were resolved against). Only runs DVC never
    produced in this copy (no train@<run> in its dvc.lock) are touched: a run the copy trains
    itself is DVC's to judge. Returns (restored, {stale run: why})."""
    archive, dest = Path(archive).resolve(), Path(dest).resolve()  # _open changes the working directory
    lock = dest / "dvc.lock"
    produced = lock.read_text() if lock.is_file() else ""
    candidates = [n for n in runs if (archive / n / PROVENANCE).is_file() and f"train@{n}:" not in produced]
    restored, stale = [], {}
    if not candidates:
        return restored, stale
    with _open(dest) as repo:
        for name in candidates:
            record = archive / name / PROVENANCE
            try:
                archived = _read_record(record, source_root)["stages"]
            except (ValueError, KeyError, TypeError) as err:
                archived, why = None, f"{record} is unreadable ({err!r})"
            if archived is not None:
                current = provenance(repo, f"evaluate@{name}", source_root)
                why = first_difference(as_trained(archived, current, archive / name / "train.json"), current)
            if why:
                stale[name] = why
                forget_restored(dest, [name])  # what an earlier restore into this copy left
                continue
            _copy_run(archive / name, dest / "runs" / name)
            shutil.copy2(record, dest / "runs" / name / PROVENANCE)
            restored.append(name)
    return restored, stale


def evaluated_in_copy(dest: Path, runs: list[str]) -> list[str]:
    """The runs of `runs` the work copy at `dest` evaluated itself: a metrics.json without the
    provenance.json a restore leaves beside it."""
    return [n for n in runs if (dest / "runs" / n / "metrics.json").is_file()
            and not (dest / "runs" / n / PROVENANCE).is_file()]


def current_in_copy(dest: Path, runs: list[str]) -> list[str]:
    """The runs of `runs` this work copy has evaluated itself (not restored) and DVC finds up to
    date, upstream included: a `dvc repro` of them is a no-op, so a step's ledger must not count
    them as reproduced by it."""
    dest = Path(dest).resolve()  # _open changes the working directory
    mine = evaluated_in_copy(dest, runs)
    if not mine:
        return []
    with _open(dest) as repo:
        return [name for name in mine if not repo.status(targets=[f"evaluate@{name}"], with_deps=True)]


def outdated_in_copy(dest: Path, runs: list[str], archive: Path, source_root: Path) -> dict[str, str]:
    """{run: why} for each run of `runs` the copy evaluated itself (not restored) whose outputs DVC
    finds older than the checkout: the page must not show them, as a stale archived run is not
    shown. A run whose archived provenance equals the current one is not among them: its
    experiment is unchanged and only DVC's bookkeeping differs (a new dependency on an upstream
    output, say)."""
    dest, archive = Path(dest).resolve(), Path(archive).resolve()  # _open changes the working directory
    mine = evaluated_in_copy(dest, runs)
    outdated: dict[str, str] = {}
    if not mine:
        return outdated
    with _open(dest) as repo:
        for name in mine:
            changed = repo.status(targets=[f"evaluate@{name}"], with_deps=True)
            if not changed:
                continue
            if _current_record(archive, name, provenance(repo, f"evaluate@{name}", source_root), source_root):
                continue
            outdated[name] = f"its outputs in the work copy predate a change to {', '.join(sorted(changed))} (dvc status)"
    return outdated


def _current_record(archive: Path, name: str, stages: dict, source_root: Path) -> dict | None:
    """archive/<name>'s record when its experiment is `stages` (the current provenance), else None
    (no record, an unreadable one, or one restore would call stale)."""
    try:
        record = _read_record(archive / name / PROVENANCE, source_root)
        trained = as_trained(record["stages"], stages, archive / name / "train.json")
        return record if first_difference(trained, stages) is None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _earlier_revision(previous: Path | None, name: str, stages: dict, source_root: Path) -> str | None:
    """The revision an earlier step archived this same experiment at (previous/<name>), if any.
    The work copy keeps its finished runs from step to step and DVC finds them up to date, so a
    later step archives them again: they keep the commit they were made at, not the later one."""
    record = _current_record(previous, name, stages, source_root) if previous is not None else None
    return record.get("revision") if record else None  # else this step's revision it is


def archive_runs(dest: Path, runs: list[str], into: Path, source_root: Path,
                 restored: list[str] = (), previous: Path | None = None) -> list[str]:
    """Writes into/<run> for each run of `runs` evaluated in the copy `dest`: those `restore` just
    restored as they came, the others when DVC finds their stages and everything upstream up to
    date (never a run whose outputs predate a change), with the revision of an equal experiment
    in `previous` (the archive this step started from) where there is one. Returns the names
    archived."""
    dest, into = Path(dest).resolve(), Path(into).resolve()  # _open changes the working directory
    previous = Path(previous).resolve() if previous is not None else None
    done: list[str] = []
    evaluated = [n for n in runs if (dest / "runs" / n / "metrics.json").is_file()]
    if not evaluated:
        return done
    revision = git_revision(source_root)
    with _open(dest) as repo:
        for name in evaluated:
            folder = dest / "runs" / name
            if name in restored:  # checked by restore just now: its record travels with it
                record = json.loads((folder / PROVENANCE).read_text())
            elif repo.status(targets=[f"evaluate@{name}"], with_deps=True):
                print(f"results: {name} is not archived: its outputs are older than the current code or params")
                continue
            else:
                stages = provenance(repo, f"evaluate@{name}", source_root)
                record = {"revision": _earlier_revision(previous, name, stages, source_root) or revision,
                          "stages": stages}
            _copy_run(folder, into / name)
            write_json_atomic(into / name / PROVENANCE, record)
            done.append(name)
    return done


def keep_archived(archive: Path, into: Path, runs: list[str]) -> list[str]:
    """Copies archive/<run> into/<run> for the runs of `runs` archived before: a run this step
    neither restored nor finished (trained in this copy but not evaluated yet, say) keeps its
    archived result when the page's folder is replaced; restore checks it again next time."""
    kept = [name for name in runs if (archive / name / PROVENANCE).is_file()]
    for name in kept:
        shutil.copytree(archive / name, into / name, dirs_exist_ok=True)
    return kept

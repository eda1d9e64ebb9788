"""The DAG audit: what each stage really read and wrote, against what dvc.yaml declares.

tests/stage_audit/sitecustomize.py records every file access of every stage process of a
`dvc repro` (see there); `undeclared_access` compares it with dvc.lock, which lists each
stage's deps and outs as DVC resolved them, and names every stage and file that disagree:

- a read must lie in a declared dep, or in one of the stage's own outs (a persisted
  checkpoint or manifest it resumes from), or be the params file (its keys are checked
  separately: `params:` in dvc.yaml);
- a write must lie in a declared out, or be one of the out's staging siblings
  (`.<name>.tmp-*`, `.<name>.old-*`, `.<name>.*.tmp`: atomic writes, pipeline/atomic.py);
  creating the folders an out lives in is fine;
- the project's Python code a stage imports (pipeline/**.py, crawlers/**.py, read as source
  or as __pycache__/*.pyc) must lie in its declared code deps, so that a code change re-runs
  the stages it changes. Excluded: what every `python -m pipeline` stage imports before its
  own code runs (the CLI, its argument wiring, the params schema, the dataset reader it
  names errors from): depending on those would re-run the whole DAG for any edit of them,
  and an edit that changes a stage's output is caught where it matters, by that stage's
  own code deps and by the tests. This start-up set is measured (the modules every such
  stage imported), not listed by hand, so it cannot hide a module only some stages use.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

import yaml

HOOK_DIR = Path(__file__).resolve().parent / "stage_audit"
PARAMS_FILES = {"params.yaml"}
CODE_DIRS = ("pipeline/", "crawlers/")
PIPELINE_CLI = "pipeline/__main__.py"
# DVC's and git's own bookkeeping: DVCLive, inside train@<run>, finds the DVC repo and tells
# DVC a step is done (.dvc/tmp); none of it is a stage's input or output.
BOOKKEEPING = (".dvc/", ".git/", ".gitignore", ".dvcignore")
# DVCLive clears these folders of its output folder at start (left empty: nothing to track).
DVCLIVE_CLEARED = ("plots/custom", "plots/images", "plots/sklearn")


def _side_file(path: str, deps: list[str]) -> bool:
    """`.<name>.verified.json` beside a dataset the stage reads: the reader's memo of which
    array files it already hashed (pipeline/datasets.py), which decides nothing but whether
    to hash again, kept outside the dataset folder so that DVC's hash of it never changes."""
    for dep in deps:
        parent, _, name = dep.rstrip("/").rpartition("/")
        memo = f"{parent}/.{name}.verified.json"
        if path == memo or path.startswith(f"{parent}/.{name}.verified.json.") or path.startswith(f"{parent}/..{name}.verified.json."):
            return True
    return False


def audit_env(log_dir: Path, repo: Path) -> dict[str, str]:
    """Environment for `dvc repro` that records every stage's file access into `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return {"PYTHONPATH": str(HOOK_DIR), "STAGE_AUDIT_DIR": str(log_dir), "STAGE_AUDIT_ROOT": str(repo),
            "PYTHONDONTWRITEBYTECODE": "1"}


def source_file(path: str) -> str:
    """pipeline/__pycache__/train.cpython-311.pyc -> pipeline/train.py (imports read either)."""
    folder, _, name = path.rpartition("/__pycache__/")
    return f"{folder}/{name.split('.', 1)[0]}.py" if folder and name.endswith(".pyc") else path


def recorded_access(log_dir: Path) -> dict[str, dict[str, set[str]]]:
    """stage -> {"R": paths read, "W": paths written, "M": folders made}, over all its processes."""
    access: dict[str, dict[str, set[str]]] = {}
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text().splitlines()
        if not lines or not lines[0].startswith("STAGE "):
            continue
        kinds = access.setdefault(lines[0][len("STAGE "):], {"R": set(), "W": set(), "M": set()})
        for line in lines[1:]:
            kind, _, path = line.partition(" ")
            if kind in kinds and path:
                kinds[kind].add(source_file(path.replace(os.sep, "/")))
    return access


def declared(repo: Path) -> dict[str, tuple[list[str], list[str]]]:
    """stage -> (deps, outs) from dvc.lock (metrics and plots are outs there too)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: ([d["path"] for d in entry.get("deps", [])], [o["path"] for o in entry.get("outs", [])])
            for name, entry in lock.items()}


def _inside(path: str, declared_path: str) -> bool:
    declared_path = declared_path.rstrip("/")
    return path == declared_path or path.startswith(declared_path + "/")


def _staging_sibling(path: str, out: str) -> bool:
    parent, _, name = out.rstrip("/").rpartition("/")
    prefix = f"{parent}/.{name}." if parent else f".{name}."
    return path.startswith(prefix)


def undeclared_access(repo: Path, log_dir: Path) -> list[str]:
    """One line per stage and file that the stage touched without declaring it."""
    stages = declared(repo)
    access = recorded_access(log_dir)
    imports = {stage: {p for p in kinds["R"] if p.startswith(CODE_DIRS) and p.endswith(".py")}
               for stage, kinds in access.items()}
    cli_stages = [found for found in imports.values() if PIPELINE_CLI in found]
    start_up = set.intersection(*cli_stages) if len(cli_stages) > 1 else set()
    problems = []
    for stage, kinds in sorted(access.items()):
        if stage not in stages:
            problems.append(f"{stage}: ran, but dvc.lock has no such stage")
            continue
        deps, outs = stages[stage]
        for path in sorted(imports[stage] - start_up):
            if not any(_inside(path, d) for d in deps):
                problems.append(f"{stage}: imports {path}, which is not among its code deps")
        for path in sorted(kinds["R"] - imports[stage]):
            # Failed look-ups (a library probing relative folders) read nothing; the import
            # system lists the package folders it imports from.
            if path in PARAMS_FILES or path.startswith(BOOKKEEPING) or not (repo / path).exists():
                continue
            if (path + "/").startswith(CODE_DIRS) and (repo / path).is_dir():
                continue
            if any(_inside(path, d) for d in deps + outs) or _side_file(path, deps):
                continue
            # Listing an out's folder (to clear stale staging siblings), reading them back.
            if any(_inside(o, path) or _staging_sibling(path, o) for o in outs):
                continue
            problems.append(f"{stage}: reads {path}, which is not among its deps")
        for path in sorted(kinds["W"]):
            if path.startswith(BOOKKEEPING) or _side_file(path, deps):
                continue
            if any(_inside(path, o) or _staging_sibling(path, o) for o in outs):
                continue
            if any(path == f"{o.rpartition('/')[0]}/{cleared}" or _inside(o.rpartition("/")[0], path)
                   for o in outs if "/dvclive/" in o for cleared in DVCLIVE_CLEARED):
                continue  # DVCLive clearing its plot folders, in the folder of its declared outs
            problems.append(f"{stage}: writes {path}, which is not among its outs")
        for path in sorted(kinds["M"]):
            if path.startswith(BOOKKEEPING):
                continue
            # Making the folders an out (or a dataset's memo) lives in; they exist already
            # when the stage's deps are in place.
            if not any(_inside(path, o) or _inside(o, path) or _staging_sibling(path, o) for o in outs + deps):
                problems.append(f"{stage}: creates the folder {path}, which is not among its outs")
    return problems


# --------------------------------------------------------------------------- params reads


def _models_in(annotation) -> list[type]:
    """The pydantic models an annotation holds (RunParams in dict[str, RunParams], ...)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def params_fields(model=None, prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, object]]:
    """"<Model>.<field>" -> (its key in params.yaml, its FieldInfo), for every leaf field,
    derived from pipeline/config.py's models: a run's key is runs.*.<field>, a crawl source's
    anime.crawl.sources.*.<field>."""
    from pipeline.config import Params

    model = model or Params
    out = {}
    for name, field in model.model_fields.items():
        inner = _models_in(field.annotation)
        if not inner:
            out[f"{model.__name__}.{name}"] = (".".join((*prefix, name)), field)
            continue
        origin = typing.get_origin(field.annotation)
        step = (name, "*") if origin in (dict, list) else (name,)
        for sub in inner:
            out.update(params_fields(sub, (*prefix, *step)))
    return out


def _covers(tracked: str, key: str) -> bool:
    """Whether the tracked params key `tracked` (dvc.lock: a section or a leaf) holds `key`."""
    t, k = tracked.split("."), key.split(".")
    return len(t) <= len(k) and all(a == b or b == "*" for a, b in zip(t, k))


def declared_params(repo: Path) -> dict[str, list[str]]:
    """stage -> the params keys dvc.lock says it tracks."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: sorted((entry.get("params") or {}).get("params.yaml", {})) for name, entry in lock.items()}


def params_problems(repo: Path, log_dir: Path) -> list[str]:
    """One line per stage and params key that disagree: a key the stage read that its `params:`
    do not track (a change would not re-run it), unless the key is speed only, and a
    speed-only key it tracks (a change would re-run it for nothing)."""
    from pipeline.config import speed_only

    fields = params_fields()
    tracked = declared_params(repo)
    problems = []
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text().splitlines()
        if not lines or not lines[0].startswith("STAGE "):
            continue
        stage = lines[0][len("STAGE "):]
        run = stage.partition("@")[2]
        for line in lines[1:]:
            if not line.startswith("P "):
                continue
            if line[2:] not in fields:
                continue  # a section or a list of models (Params.runs, AnimeCrawlParams.sources): its leaves are read next
            key, field = fields[line[2:]]
            key = key.replace("runs.*.", f"runs.{run}.") if stage.startswith(("train@", "evaluate@")) else key
            if not speed_only(field) and not any(_covers(t, key) for t in tracked.get(stage, [])):
                problems.append(f"{stage}: reads params key {key}, which its params in dvc.yaml do not track")
    for stage, keys in sorted(tracked.items()):
        for name, (key, field) in fields.items():
            if speed_only(field) and any(_covers(t, key) for t in keys):
                problems.append(f"{stage}: tracks the speed-only key {key} (a change would re-run it for nothing)")
    return sorted(set(problems))

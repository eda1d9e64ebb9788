"""`make smoke`: the real `dvc repro` of the small profile in a temporary copy of the repo.

The copy gets `params.smoke.yaml` as its params.yaml, its own git and DVC history, and the
project's virtualenv on PATH, so what runs is exactly what `dvc repro` runs for a user,
only on less data. The copy is kept so `dvc exp show` can be run there afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE_PARAMS = REPO / "params.smoke.yaml"
# Keys whose values are paths that may be relative to the repository root.
PATH_KEYS = (("mnist", "source"), ("celeba", "source"), ("anime", "faces", "cascade_path"),
             ("evaluate", "inception_weights"))


def project_files(repo: Path = REPO) -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as a clean clone sees it."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, check=True, capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name and (repo / name).is_file()]


def resolve_paths(params: dict, base: Path) -> dict:
    """Make relative source paths absolute (the copy lives elsewhere); 'download' stays."""
    for key in PATH_KEYS:
        node = params
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(key[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value != "download" and not Path(value).is_absolute():
            node[key[-1]] = str((base / value).resolve())
    return params


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def make_copy(workdir: Path | None = None, params_file: Path = SMOKE_PARAMS) -> tuple[Path, dict]:
    """Copy the project into a fresh git+DVC repo whose params.yaml is `params_file`."""
    dest = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dcgan-smoke-"))
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    params = resolve_paths(yaml.safe_load(params_file.read_text()), REPO)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("GIT_AUTHOR_NAME", "smoke")
    env.setdefault("GIT_AUTHOR_EMAIL", "smoke@localhost")
    env.setdefault("GIT_COMMITTER_NAME", "smoke")
    env.setdefault("GIT_COMMITTER_EMAIL", "smoke@localhost")
    env["DVC_NO_ANALYTICS"] = "1"
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "smoke profile"], dest, env)
    return dest, env


def smoke(workdir: Path | None = None) -> Path:
    dest, env = make_copy(workdir)
    run(["dvc", "repro"], dest, env)
    env.setdefault("COLUMNS", "250")  # rich renders the table to the terminal width
    run(["dvc", "exp", "show", "--no-pager"], dest, env)
    run(["dvc", "metrics", "show"], dest, env)
    print(f"\nsmoke copy kept at {dest}; inspect it with: cd {dest} && dvc exp show && dvc plots show")
    return dest

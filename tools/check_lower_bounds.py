"""Install every lower bound of pyproject.toml in a throwaway venv and import every module.

    .venv/bin/python tools/check_lower_bounds.py [--venv DIR] [--keep] [-- PYTEST ARGS]

Each `name>=X` of `dependencies` and of the `dev` extra becomes `name==X` (exact pins stay),
pip resolves the rest; then every module of `pipeline` and `crawlers` is imported from this
checkout, and so is every other module the code or the tests import anywhere (lazy imports in
functions included). With arguments after `--` it also runs pytest with them in that venv
(`-- -m "not slow"` is the thorough check: ~5 minutes more). It fails when a floor does not
install beside the others or something does not import on it.

torch and torchvision are exact pins (a 5.5 GB CUDA build): instead of installing them again,
the new venv sees this interpreter's copies (and their own dependencies, none of which is one of
ours) through a .pth file pointing at a folder of links, so the check takes minutes, not the
torch download. Needs PyPI (pip's ordinary index); run by hand or as a CI step, not by pytest.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
SHARED = {"torch", "torchvision"}  # exact pins reused from this interpreter
NO_DEPS = ["facenet-pytorch==2.6.0"]  # as `make setup`: its metadata pins an old torch (see pyproject.toml)
PACKAGES = ("pipeline", "crawlers")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = []
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        lower = [s.version for s in req.specifier if s.operator in (">=", "==")]
        if not lower:
            sys.exit(f"pyproject.toml: {req.name} has no lower bound ({line!r})")
        pins.append(f"{req.name}{extras}=={lower[0]}")
    return pins


def closure(names: set[str], exclude: set[str]) -> set[str]:
    """The installed distributions `names` need, transitively, minus `exclude` (ours to pin)."""
    seen, todo = set(), list(names)
    while todo:
        name = norm(todo.pop())
        if name in seen or name in exclude:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional or platform-specific requirement not installed here
        seen.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def link_shared(shim: Path, exclude: set[str]) -> list[str]:
    """Links to this interpreter's torch, torchvision and their dependencies in `shim`."""
    shim.mkdir(parents=True)
    linked = []
    for name in sorted(closure(SHARED, exclude)):
        dist = md.distribution(name)
        root = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if not (shim / top).exists():
                (shim / top).symlink_to(root / top)
        linked.append(f"{name}=={dist.version}")
    return linked


def run(cmd: list[str], **kwargs) -> None:
    shown = [c if "\n" not in c else "<script>" for c in cmd]
    print("+", " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


CHECK_FLOORS = """
import importlib.metadata as md, sys
from packaging.requirements import Requirement
from packaging.version import Version
bad = []
for line in sys.argv[1:]:
    req = Requirement(line)
    pinned, installed = Version(next(iter(req.specifier)).version), Version(md.version(req.name))
    if installed != pinned:
        bad.append(f"{req.name}: pinned {pinned}, installed {installed}")
print("\\n".join(bad) or f"all {len(sys.argv) - 1} floors installed as pinned")
sys.exit(1 if bad else 0)
"""

IMPORT_ALL = """
import ast, importlib, pkgutil, sys, warnings
from pathlib import Path

repo, packages = Path(sys.argv[1]), sys.argv[2:]
# Every module the code and the tests import anywhere, lazy imports inside functions included
# (dvclive, torchmetrics, facenet_pytorch...): a module-level import pass would miss those.
local = {p.stem for p in repo.rglob("*.py") if ".venv" not in p.parts} | {p.name for p in repo.iterdir()}
named = set()
for source in [p for d in (*packages, "tests", "bench") for p in (repo / d).rglob("*.py")]:
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named.add(node.module)
third_party = sorted(m for m in named if m.split(".")[0] not in local | set(sys.stdlib_module_names))
ours = [info.name for package in packages
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".")]
failed = []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for name in [*packages, *ours, *third_party]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(f"imported {len(ours)} modules of {', '.join(packages)} and the {len(third_party)} other modules they "
      f"and the tests import: {', '.join(third_party)}")
for w in {f"{w.category.__name__}: {w.message}" for w in caught if w.category is not DeprecationWarning}:
    print("warning on import:", str(w)[:300])
for line in failed:
    print("FAILED", line)
sys.exit(1 if failed else 0)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, help="where to build it (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the venv afterwards")
    parser.add_argument("pytest_args", nargs="*", help="after --: run pytest with these in the venv")
    args = parser.parse_args()

    started = time.monotonic()
    venv = args.venv or Path(tempfile.mkdtemp(prefix="lower-bounds-"))
    if venv.exists() and any(venv.iterdir()):
        sys.exit(f"{venv}: not empty")
    pins = floors()
    ours = {norm(Requirement(p).name) for p in pins} - SHARED
    try:
        run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)])
        py = str(venv / "bin" / "python")
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        linked = link_shared(venv / "shared-torch", ours)
        (Path(site) / "shared_torch.pth").write_text(str(venv / "shared-torch") + "\n")
        print(f"reusing {len(linked)} distributions from {sysconfig.get_paths()['purelib']}: "
              f"{', '.join(d for d in linked if d.split('==')[0] in SHARED)} (+ their dependencies)")
        (venv / "floors.txt").write_text("\n".join(pins) + "\n")
        print("floors:", " ".join(pins), flush=True)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        run([py, "-m", "pip", "install", "--quiet", "-r", str(venv / "floors.txt")], env=env)
        run([py, "-m", "pip", "install", "--quiet", "--no-deps", *NO_DEPS], env=env)
        # pip must not have moved a floor (another requirement forcing a newer one would).
        run([py, "-c", CHECK_FLOORS, *pins])
        env = {**env, "PYTHONPATH": str(REPO)}
        run([py, "-c", IMPORT_ALL, str(REPO), *PACKAGES], env=env, cwd=REPO)
        if args.pytest_args:
            run([py, "-m", "pytest", *args.pytest_args], env=env, cwd=REPO)
    except subprocess.CalledProcessError as exc:
        print(f"lower bounds: FAILED ({exc.cmd[0]} ... exited {exc.returncode}) after "
              f"{time.monotonic() - started:.0f} s; venv kept at {venv}")
        return 1
    print(f"lower bounds: ok in {time.monotonic() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Running the project's commands (dvc, python -m ...) the way a DVC stage runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The crawl_anime stage as dvc.yaml declares it, without its code deps (the throwaway repos of
# the DVC tests hold no code; `python -m crawlers` comes from the installed project).
CRAWL_ANIME_STAGE = """\
  crawl_anime:
    cmd: python -m crawlers crawl
    params: [anime.crawl]
    outs:
      - data/raw/anime:
          persist: true
"""


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with the virtualenv first on PATH (a stage's `python` is the venv's);
    fail the test with the command's output when it exits non-zero."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result

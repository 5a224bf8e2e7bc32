"""How to run this careflow again from a given directory: for the commands careflow suggests.

``make demo`` runs ``.venv/bin/careflow``, which is not on the user's PATH: a hint that says
plain ``careflow`` would fail. The hint names the program the way this process was started,
as a path that works from the directory the user will type it in.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def careflow_command(where: Path) -> str:
    """The shell words that run this careflow from ``where`` (e.g. ``../.venv/bin/careflow``)."""
    script = sys.argv[0] if sys.argv else ""
    name = os.path.basename(script)
    if name.startswith("careflow") and not name.endswith(".py"):
        found = script if os.sep in script else shutil.which(script)
        if found:
            on_path = shutil.which("careflow")
            if on_path and os.path.realpath(on_path) == os.path.realpath(found):
                return "careflow"
            return _path_from(where, found)
    # ``python -m careflow`` (or careflow run from Python): the same interpreter, as a module.
    return f"{_path_from(where, sys.executable)} -m careflow"


def _path_from(where: Path, target: str) -> str:
    """``target`` as typed from ``where``: relative when that is shorter, quoted for the shell."""
    absolute = os.path.abspath(target)  # not resolved: a symlinked .venv stays as the user sees it
    relative = os.path.relpath(absolute, os.path.abspath(where))
    if os.sep not in relative:
        relative = os.path.join(os.curdir, relative)  # a bare name would be looked up on PATH
    return shlex.quote(relative if len(relative) < len(absolute) else absolute)

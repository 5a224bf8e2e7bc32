"""Throwaway virtualenvs that see the test environment's packages, to pip-install plugin packages into.

``python -m venv --system-site-packages`` run from inside a virtualenv would see the *base*
interpreter's packages, not careflow; instead the new venv gets a ``.pth`` file that adds
this environment's site-packages (processing its ``.pth`` files, so an editable careflow
works). Installing into the throwaway venv keeps the test environment itself unchanged:
no entry points leak into other tests, and parallel runs cannot collide.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(
        self,
        *args: str | Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python args...`` in the venv; raises with the output when it fails."""
        merged = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_", "PYTEST_"))}
        merged.update(env or {})
        result = subprocess.run(
            [str(self.python), *map(str, args)],
            cwd=cwd,
            env=merged,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def pip_install_editable(self, project: Path) -> None:
        """``pip install -e project`` without dependencies (careflow is already visible)."""
        self.run("-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", "-e", project)


def make_venv(root: Path) -> Venv:
    """A new venv at ``root`` whose Python also sees this test environment's packages (pip included)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    venv = Venv(root)
    purelib = subprocess.run(
        [str(venv.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in dict.fromkeys(parents)]
    # "zz" sorts after the venv's own .pth files: its own packages come first on sys.path.
    (Path(purelib) / "zz_careflow_test_parent.pth").write_text("\n".join(lines) + "\n", "utf-8")
    return venv

"""The package as a user installs it: ``pip install .`` (not editable) into a fresh virtual environment, then
``emocaliber demo --quick`` from an empty directory. Everything the demo needs at run time must ship in the wheel;
a path into the checkout, a repository script run by file name or a YAML read from ``recipes/`` fails here.

The fresh environment borrows this interpreter's installed libraries (torch, TRL, ...) through a ``.pth`` line
instead of downloading them again; such a line is not processed for further ``.pth`` files, so an editable
install of the checkout in that environment stays invisible and ``emocaliber`` comes from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                  "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(cmd: list, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the project installed from a copy of its source (pip builds in the source tree)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT / "emocaliber", source / "emocaliber", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    # Without its own pip (and the old setuptools that comes with it): pip and setuptools are borrowed too.
    _run([sys.executable, "-m", "venv", "--without-pip", venv], base, 300)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, 60)
                   .stdout.strip())
    (purelib / "_borrowed_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", source], base, 600)
    shutil.rmtree(source)  # nothing may still point into the source
    return venv


def test_the_installed_package_is_the_wheels(installed, tmp_path):
    code = "import emocaliber, emocaliber.demo as d; print(emocaliber.__file__); print(d.RECIPES)"
    where, recipes = _run([installed / "bin" / "python", "-c", code], tmp_path, 120).stdout.split()
    purelib = _run([installed / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp_path, 60).stdout.strip()
    assert where.startswith(purelib) and not where.startswith(str(ROOT))
    assert sorted(p.name for p in Path(recipes).iterdir()) == ["prepare.yaml", "stage1.yaml", "stage2.yaml",
                                                               "stage3.yaml"]
    assert _run([installed / "bin" / "emocaliber", "--help"], tmp_path, 60).stdout.startswith("usage: emocaliber")


@pytest.mark.slow
def test_quick_demo_runs_from_an_empty_directory(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    done = _run([installed / "bin" / "emocaliber", "demo", "--quick", "--out", "demo"], work, 1800)
    assert (work / "demo" / "stages.json").is_file() and (work / "demo" / "report.md").is_file()
    assert re.search(r"\[(\d+)/\1\] report", done.stdout), done.stdout[-2000:]
    assert sorted(p.name for p in work.iterdir()) == ["demo"]  # nothing written beside the run directory

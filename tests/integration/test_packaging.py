"""The built wheel installs beside Supervisor (the process manager, import name ``supervisor``) without
touching its import name: bbd's supervisor and shards are ``bigbunny.supervisor`` and ``bigbunny.shards``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=500, cwd=cwd)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def test_wheel_installs_beside_the_supervisor_distribution(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("bigbunny", "supervisor", "shards"):  # symlinks kept as links: the mapping must not need them
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, src)
    [wheel] = wheels.glob("bigbunny-*.whl")
    names = _run(sys.executable, "-m", "zipfile", "-l", wheel)
    assert "bigbunny/supervisor/front/api.py" in names and "bigbunny/shards/worker.py" in names
    assert not any(line.startswith(("supervisor/", "shards/")) for line in names.splitlines())

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    _run(py, "-m", "pip", "install", "-q", wheel, "supervisor")
    probe = (
        "import supervisor.supervisord, bigbunny.supervisor.lifecycle, bigbunny.shards.worker, bigbunny.aio\n"
        "assert '/site-packages/supervisor/' in supervisor.supervisord.__file__\n"
        "assert '/site-packages/bigbunny/supervisor/' in bigbunny.supervisor.lifecycle.__file__\n"
        "print('ok')\n"
    )
    assert _run(py, "-c", probe, cwd=tmp_path).strip() == "ok"
    assert "Usage" in _run(env / "bin" / "bbd", "--help", cwd=tmp_path)

"""The sandbox starts however the interpreter's path was spelled: a virtualenv reached through a
symlinked folder (a home or scratch space on a cluster) runs code cells like any other."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth.tools.sandbox import _symlinks_along

ROOT = Path(__file__).resolve().parent.parent

CELL = """\
import json, sys
from synth.tools.kernel import KernelConfig, PythonKernel
from synth.tools.sandbox import KernelPool, SandboxConfig
with KernelPool(SandboxConfig(isolation="bwrap")) as pool, PythonKernel([], pool, KernelConfig()) as kernel:
    result = kernel.execute("import sys; print(6 * 7, sys.prefix)")
print(json.dumps({"executable": sys.executable, "status": result.status, "stdout": result.stdout, "stderr": result.stderr}))
"""


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_a_venv_reached_through_a_symlinked_folder_runs_code(tmp_path):
    venv = Path(sys.prefix)
    assert sys.prefix != sys.base_prefix, "the test suite runs from a virtualenv"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "env").symlink_to(venv, target_is_directory=True)  # /…/scratch/env -> the real venv
    python = scratch / "env" / "bin" / Path(sys.executable).name
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(python), "-c", CELL], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["executable"] == str(python)  # the kernel really was started through the link
    assert outcome["status"] == "ok", outcome["stderr"]
    assert outcome["stdout"].split() == ["42", str(scratch / "env")]


def test_symlinks_along_a_path_are_found_in_folders_and_names(tmp_path):
    real = tmp_path / "real" / "bin"
    real.mkdir(parents=True)
    (real / "python3.11").write_text("")
    (real / "python").symlink_to("python3.11")  # relative, in the name itself
    (tmp_path / "home").symlink_to(tmp_path / "real")  # absolute, a folder
    found = _symlinks_along(str(tmp_path / "home" / "bin" / "python"))
    assert found == [(str(tmp_path / "home"), str(tmp_path / "real")), (str(real / "python"), "python3.11")]
    assert _symlinks_along(str(real / "python3.11")) == []

"""A stateful Python kernel per trajectory: a subprocess with rlimits, a wall time-out per call,
its own temporary working directory and a scrubbed environment.

Outcomes are distinct: `ok`, `code_error`, `timeout`, `memory_exceeded`, `kernel_died`. A dead
or timed-out kernel becomes an observation for the model; the next call starts a fresh kernel
(with the input images preloaded again) and says that earlier state was lost.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
_LAUNCH = "from synth.kernel_worker import main; main()"


class KernelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = 20.0
    memory_mb: int = 4096
    cpu_s: int = 60
    file_size_mb: int = 64
    output_limit: int = 8000
    max_images: int = 10
    min_image_side: int = 32


@dataclass
class ExecResult:
    status: str  # ok | code_error | timeout | memory_exceeded | kernel_died
    stdout: str = ""
    stderr: str = ""
    images: list[bytes] = field(default_factory=list)  # PNG bytes
    duration_ms: float = 0.0


def _limits(cfg: KernelConfig):
    def apply() -> None:
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_mb * mb, cfg.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_CPU, (cfg.cpu_s, cfg.cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg.file_size_mb * mb, cfg.file_size_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class PythonKernel:
    """One trajectory's kernel. Not thread-safe: one call at a time, as in a trajectory."""

    def __init__(self, images: list[bytes], cfg: KernelConfig | None = None) -> None:
        self.cfg = cfg or KernelConfig()
        self._images = [base64.b64encode(b).decode() for b in images]
        self._proc: subprocess.Popen | None = None
        self._workdir: str | None = None
        self._restarted = False

    def _start(self) -> None:
        self._workdir = tempfile.mkdtemp(prefix="deepeyes-kernel-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {  # scrubbed: no API keys or user settings reach model-written code
            "PATH": "/usr/bin:/bin",
            "HOME": self._workdir,
            "TMPDIR": self._workdir,
            "PYTHONPATH": _PROJECT_ROOT,
            "MPLBACKEND": "module://synth.kernel_backend",
            "MPLCONFIGDIR": self._workdir,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {_PROJECT_ROOT!r}); {_LAUNCH}",
             str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            cwd=self._workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so a time-out kills everything it spawned
            preexec_fn=_limits(self.cfg),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._to_child = os.fdopen(to_child_w, "w", encoding="utf-8")
        self._from_child = os.fdopen(from_child_r, "r", encoding="utf-8")
        reply = self._request({"op": "init", "images": self._images}, timeout=max(self.cfg.timeout_s, 30.0))
        if reply is None or reply.get("status") != "ok":
            self.close()
            raise RuntimeError("python kernel failed to start")

    def _request(self, request: dict, timeout: float) -> dict | None:
        """Send one request; the reply, or None when the kernel died or ran out of time."""
        try:
            self._to_child.write(json.dumps(request) + "\n")
            self._to_child.flush()
        except (BrokenPipeError, OSError):
            return None
        ready, _, _ = select.select([self._from_child], [], [], timeout)
        if not ready:
            return {"status": "timeout"}
        line = self._from_child.readline()
        return json.loads(line) if line else None

    def execute(self, code: str) -> ExecResult:
        started = time.perf_counter()
        note = ""
        if self._proc is None:
            self._start()
            if self._restarted:
                note = "Note: the kernel was restarted; variables from earlier cells are lost.\n"
        request = {
            "op": "exec",
            "code": code,
            "output_limit": self.cfg.output_limit,
            "max_images": self.cfg.max_images,
            "min_side": self.cfg.min_image_side,
        }
        reply = self._request(request, self.cfg.timeout_s)
        elapsed = (time.perf_counter() - started) * 1000
        if reply is None or reply.get("status") == "timeout":
            died = reply is None
            self._kill()
            if died:
                return ExecResult("kernel_died", stderr=note + "Error: the Python kernel died (out of memory or crashed).", duration_ms=elapsed)
            return ExecResult("timeout", stderr=note + f"Error: execution timed out after {self.cfg.timeout_s:g} s.", duration_ms=elapsed)
        return ExecResult(
            status=reply["status"],
            stdout=reply["stdout"],
            stderr=note + reply["stderr"],
            images=[base64.b64decode(i) for i in reply["images"]],
            duration_ms=elapsed,
        )

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
            for stream in (self._to_child, self._from_child):
                try:
                    stream.close()
                except OSError:
                    pass
            self._proc = None
            self._restarted = True
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def close(self) -> None:
        self._kill()

    def __enter__(self) -> PythonKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

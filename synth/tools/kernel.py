"""A stateful Python kernel per trajectory, run by the sandbox's warm zygote (`synth.tools.sandbox`).

Outcomes are distinct: `ok`, `code_error`, `timeout`, `memory_exceeded`, `kernel_died`,
`sandbox_unavailable`. A dead or timed-out kernel becomes an observation for the model, never a
crash of the pipeline; the next call starts a fresh session (input images preloaded again) and
says that earlier state was lost.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from pydantic import Field

from curation.strict_config import StrictConfig
from synth.tools import wire
from synth.tools.sandbox import KernelPool, SandboxConfig, SandboxUnavailable


TIMEOUT_GRACE_S = 2.0  # how long past `timeout_s` the pipeline waits for the kernel's own time-out reply


class KernelConfig(StrictConfig):
    timeout_s: float = Field(20.0, gt=0)  # wall time per cell; the whole session is killed after it
    # Each limit must be positive: a 0 or negative value would make setrlimit fail (or forbid
    # everything) in the session child, and every cell would end as `kernel_died`.
    memory_mb: int = Field(4096, ge=1)  # address space
    cpu_s: int = Field(60, ge=1)  # CPU seconds for the session
    file_size_mb: int = Field(64, ge=1)
    open_files: int = Field(256, ge=1)
    processes: int = Field(64, ge=1)  # per session (its own uid), so a fork bomb stops there
    output_limit: int = Field(8000, ge=1)  # characters kept of stdout and of stderr per cell
    max_images: int = Field(10, ge=1)  # images returned per cell
    min_image_side: int = Field(32, ge=1)
    max_image_aspect: float = Field(200.0, ge=1)  # long side / short side, so 1 is a square
    max_image_pixels: int = Field(4_000_000, ge=1)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)

    def limits(self) -> dict:
        return {
            "memory_mb": self.memory_mb,
            "cpu_s": self.cpu_s,
            "file_size_mb": self.file_size_mb,
            "open_files": self.open_files,
            "processes": self.processes,
        }


@dataclass
class ExecResult:
    status: str  # ok | code_error | timeout | memory_exceeded | kernel_died | sandbox_unavailable
    stdout: str = ""
    stderr: str = ""
    images: list[bytes] = field(default_factory=list)  # PNG bytes
    duration_ms: float = 0.0


class PythonKernel:
    """One trajectory's kernel. Not thread-safe: one call at a time, as in a trajectory."""

    def __init__(self, images: list[bytes], pool: KernelPool, cfg: KernelConfig | None = None) -> None:
        self.cfg = cfg or KernelConfig()
        self.pool = pool
        self._images = [base64.b64encode(b).decode() for b in images]
        self._channel = None
        self._handle: dict | None = None
        self._restarted = False

    def start(self) -> None:
        """Start the session now (the first `execute` does it otherwise)."""
        if self._channel is not None:
            return
        self._channel, self._handle = self.pool.spawn(self.cfg.limits())
        try:
            wire.send(self._channel, {"op": "init", "images": self._images})
            reply = wire.recv(self._channel, timeout=max(self.cfg.timeout_s, 30.0))
        except (wire.ChannelClosed, wire.ChannelTimeout, OSError):
            reply = None
        if not reply or reply.get("status") != "ok":
            self._stop()
            raise ConnectionError((reply or {}).get("error") or "the kernel session did not start")

    def execute(self, code: str) -> ExecResult:
        started = time.perf_counter()
        note = ""
        if self._channel is None:
            try:
                self.start()
            except SandboxUnavailable as exc:
                return ExecResult("sandbox_unavailable", stderr=f"Error: the Python sandbox is unavailable: {exc}")
            except ConnectionError as exc:
                detail = f": {exc}" if str(exc) != "the kernel session did not start" else "."
                return ExecResult("kernel_died", stderr=f"Error: the Python kernel failed to start{detail}")
            except OSError:
                return ExecResult("kernel_died", stderr="Error: the Python kernel failed to start.")
            if self._restarted:
                note = "Note: the kernel was restarted; variables from earlier cells are lost.\n"
        request = {
            "op": "exec",
            "code": code,
            "output_limit": self.cfg.output_limit,
            "max_images": self.cfg.max_images,
            "min_side": self.cfg.min_image_side,
            "max_aspect": self.cfg.max_image_aspect,
            "max_pixels": self.cfg.max_image_pixels,
            "timeout_s": self.cfg.timeout_s,  # the kernel stops the cell then, and sends what it printed
        }
        timed_out = f"Error: execution timed out after {self.cfg.timeout_s:g} s."
        try:
            wire.send(self._channel, request)
            # A little past the kernel's own deadline: its reply keeps the cell's output. Code stuck
            # in C never answers: the session is killed here, without it.
            reply = wire.recv(self._channel, timeout=self.cfg.timeout_s + TIMEOUT_GRACE_S)
        except wire.ChannelTimeout:
            self._stop()
            return self._failure("timeout", note + timed_out, started)
        except (wire.ChannelClosed, OSError, KeyError):
            self._stop()
            return self._failure("kernel_died", note + "Error: the Python kernel died (crashed, was killed, or exceeded a limit).", started)
        if reply["status"] == "timeout":  # the session is killed after a time-out, as when it does not answer
            self._stop()
            printed = reply["stderr"] + ("\n" if reply["stderr"] and not reply["stderr"].endswith("\n") else "")
            return ExecResult("timeout", stdout=reply["stdout"], stderr=note + printed + timed_out,
                              images=[base64.b64decode(i) for i in reply["images"]], duration_ms=(time.perf_counter() - started) * 1000)
        return ExecResult(
            status=reply["status"],
            stdout=reply["stdout"],
            stderr=note + reply["stderr"],
            images=[base64.b64decode(i) for i in reply["images"]],
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    @staticmethod
    def _failure(status: str, message: str, started: float) -> ExecResult:
        return ExecResult(status, stderr=message, duration_ms=(time.perf_counter() - started) * 1000)

    def _stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._restarted = True
        if self._handle is not None:
            self.pool.kill(self._handle)
            self._handle = None

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> PythonKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

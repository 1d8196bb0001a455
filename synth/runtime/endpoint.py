"""Managed model servers: start a server process, wait until `/v1/models` answers, stop it; and
`EndpointError`, how every endpoint failure reaches the user.

Used for the replay server in the demo and, with `vllm serve MODEL` from vLLM's own environment
as the command, for a real teacher: the pipeline reaches either only over HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


class EndpointError(RuntimeError):
    """A model endpoint that cannot serve a stage: a managed server that did not come up (the
    message names its command and log file), an endpoint that failed the preflight
    (`synth.runtime.preflight`), or one that failed every sample of a stage. The message is one line for
    the user. `transient`: whether the same call may work later (a refused connection, a time-out,
    an HTTP 5xx), so a flow's task retries are worth it; a wrong model name or a refused field is not."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedServer:
    def __init__(self, command: list[str], base_url: str, log_path: str | Path, ready_timeout_s: float = 120.0) -> None:
        self.command = command
        self.base_url = base_url.rstrip("/")
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen | None = None

    def start(self) -> ManagedServer:
        """Start the server (in a session of its own) and wait until `/models` answers 200; returns self.
        Raises `EndpointError` when it exits or is not ready within `ready_timeout_s`. However the wait
        ends short of ready (that error, Ctrl-C, a SIGTERM raised as an exception), the server is
        stopped first: the caller never got it to stop, and its own session keeps it out of a
        process-group kill."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EndpointError(f"model server exited with code {self._proc.returncode}: {' '.join(self.command)} (log: {self.log_path})")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise EndpointError(f"model server not ready after {self.ready_timeout_s:g} s: {' '.join(self.command)} (log: {self.log_path})")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            pass
        self._proc = None

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

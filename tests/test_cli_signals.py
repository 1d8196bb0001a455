"""A `deepeyes` command stopped with SIGTERM (a scheduler's stop, `kill`, `timeout`) cleans up as an
interrupted one does: it says `terminated`, exits 143, and leaves no process behind (Prefect's
ephemeral API server, the replay teacher), where Python's default SIGTERM left the server running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads process trees from /proc (Linux)")


def descendants(pid: int) -> dict[int, str]:
    """Every live process under `pid`, with its command line."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            for child in children:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not gone or a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_a_terminated_run_stops_its_prefect_server_and_exits_143(tmp_path):
    config = tmp_path / "sig.yaml"
    config.write_text("name: sig\nworld: {kind: classic, per_family: 2}\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("uvicorn" in cmd for cmd in started.values()):
            assert run.poll() is None, run.communicate()
            time.sleep(0.3)
            started = descendants(run.pid)
        assert any("uvicorn" in cmd for cmd in started.values()), "Prefect's ephemeral server never started"
        time.sleep(2)  # into the flow: Prefect's own SIGTERM handler is the one installed
        started |= descendants(run.pid)
        run.send_signal(signal.SIGTERM)
        # Without the handler this timed out: the orphaned server kept the output pipes open.
        out, err = run.communicate(timeout=90)
        assert run.returncode == 143, (out, err)
        assert err.strip().splitlines()[-1] == "terminated", err
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.2)
        left = {pid: cmd for pid, cmd in started.items() if alive(pid)}
        assert not left, f"left running: {left}"
    finally:
        for pid in [run.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_main_in_process_puts_the_callers_sigterm_handler_back(monkeypatch):
    from flows.cli import main

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    monkeypatch.setattr(sys, "argv", ["deepeyes", "--no-such-option"])
    try:
        with pytest.raises(SystemExit):
            main()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)

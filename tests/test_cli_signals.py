"""A `deepeyes` command stopped with SIGTERM (a scheduler's stop, `kill`, `timeout`) or Ctrl-C cleans
up and ends in one line: `terminated` and exit 143, or `interrupted` and exit 130, with no process
left behind (Prefect's ephemeral API server, the replay teacher) and no traceback, whether the
signal reaches the command alone or its whole process group (Prefect's API server with it)."""

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


@pytest.mark.parametrize(("signum", "group", "said", "code"), [
    (signal.SIGTERM, False, "terminated", 143),
    (signal.SIGTERM, True, "terminated", 143),  # `timeout`, a scheduler stopping a job's process group
    (signal.SIGINT, True, "interrupted", 130),  # Ctrl-C in a terminal
], ids=["sigterm", "sigterm-group", "sigint-group"])
def test_a_stopped_run_stops_its_servers_and_ends_in_one_line(tmp_path, signum, group, said, code):
    config = tmp_path / "sig.yaml"
    config.write_text("name: sig\nworld: {kind: classic, per_family: 2}\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    # A session of its own, so that signalling its group does not signal pytest's.
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
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
        if group:
            os.killpg(run.pid, signum)
        else:
            run.send_signal(signum)
        # Without the handler this timed out: the orphaned server kept the output pipes open.
        out, err = run.communicate(timeout=90)
        assert run.returncode == code, (out, err)
        assert err.strip().splitlines()[-1] == said and "Traceback" not in err, err
        # review m1: not after Prefect's lines about the run the signal crashed
        assert "Crash detected!" not in err and "Finished in state Crashed" not in err, err
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.2)
        left = {pid: cmd for pid, cmd in started.items() if alive(pid)}
        assert not left, f"left running: {left}"
    finally:
        for pid in [run.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_main_in_process_puts_the_callers_signal_handlers_back(monkeypatch):
    from flows.cli import main

    def mine(signum, frame):
        pass

    previous = {signum: signal.signal(signum, mine) for signum in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(sys, "argv", ["deepeyes", "--no-such-option"])
    try:
        with pytest.raises(SystemExit):
            main()
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

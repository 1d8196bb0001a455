"""The Python kernel and its sandbox: state, images, outcomes, and a battery of hostile code."""

import io
import os
import socket
import threading
import time

import pytest
from PIL import Image

from synth.tools import sandbox as sandbox_module
from synth.tools.kernel import KernelConfig, PythonKernel
from synth.tools.sandbox import KernelPool, SandboxConfig, SandboxUnavailable


def png(size=(120, 90), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pool():
    with KernelPool(SandboxConfig(isolation="bwrap")) as kernel_pool:
        yield kernel_pool


def run_once(pool, code, **limits):
    with PythonKernel([png()], pool, KernelConfig(**{"timeout_s": 3, **limits})) as kernel:
        return kernel.execute(code)


def assert_next_kernel_works(pool):
    result = run_once(pool, "print(image_1.size)")
    assert (result.status, result.stdout.strip()) == ("ok", "(120, 90)")


def test_state_images_and_displayed_images(pool):
    with PythonKernel([png(), png((50, 60))], pool) as kernel:
        first = kernel.execute("x = 41\nprint(image_1.size, image_2.size)\nimage_1.crop((0, 0, 10, 10)).show()")
        assert first.status == "ok" and first.stdout.strip() == "(120, 90) (50, 60)"
        assert len(first.images) == 1
        assert min(Image.open(io.BytesIO(first.images[0])).size) >= 32  # tiny crops are upscaled
        assert kernel.execute("print(x + 1)").stdout.strip() == "42"
        plot = kernel.execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
        assert plot.status == "ok" and len(plot.images) == 1
        many = kernel.execute("for i in range(15):\n    image_2.show()")
        assert len(many.images) == 10  # at most 10 images per call
        wide = kernel.execute("from PIL import Image\nImage.new('RGB', (5000, 4)).show()")
        w, h = Image.open(io.BytesIO(wide.images[0])).size
        assert min(w, h) >= 32 and max(w, h) / min(w, h) <= 200


def test_sessions_do_not_share_state_or_files(pool):
    with PythonKernel([], pool) as a, PythonKernel([], pool) as b:
        a.execute("secret = 1\nopen('note.txt', 'w').write('private')")
        where = a.execute("import os\nprint(os.getcwd())").stdout.strip()
        assert b.execute("print(secret)").status == "code_error"
        peek = b.execute(f"print(open({where!r} + '/note.txt').read())")
        assert peek.status == "code_error" and "Permission denied" in peek.stderr


def test_code_error_timeout_and_death_are_distinct_and_recoverable(pool):
    with PythonKernel([png()], pool, KernelConfig(timeout_s=1.5)) as kernel:
        error = kernel.execute("1 / 0")
        assert error.status == "code_error" and "ZeroDivisionError" in error.stderr
        kernel.execute("kept = 5")
        assert kernel.execute("print(kept)").stdout.strip() == "5"  # an error does not lose state
        timeout = kernel.execute("while True:\n    pass")
        assert timeout.status == "timeout" and "timed out" in timeout.stderr
        after = kernel.execute("print(image_1.size)")
        assert after.status == "ok" and "restarted" in after.stderr  # fresh session, images preloaded


def test_environment_is_scrubbed(pool, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    result = run_once(pool, "import os\nprint(sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k))")
    assert result.stdout.strip() == "[]"


def live_session_processes(timeout_s: float = 3.0) -> list[int]:
    """Processes running under a session uid (zombies aside), after a moment to be reaped."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid >= 200_000:
                    if open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


HOSTILE = {
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout"),
    "memory_bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))", "memory_exceeded"),
    "huge_allocation": ("x = bytearray(64 * 1024 ** 3)", "memory_exceeded"),
    "infinite_loop": ("while True:\n    pass", "timeout"),
    "busy_threads": (
        "import threading, time\n"
        "for _ in range(4):\n    threading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\n"
        "time.sleep(60)", "timeout"),
    "escape_process_group": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\ntime.sleep(600)", "timeout"),
    "read_shadow": ("print(open('/etc/shadow').read())", "code_error"),
    "read_home": ("import os\nprint(os.listdir('/root'))\nprint(open('/root/.bashrc').read())", "code_error"),
    "write_outside_workdir": ("open('/tmp/escaped', 'w').write('x')", "code_error"),
    "write_into_venv": ("import sys\nopen(sys.prefix + '/owned', 'w').write('x')", "code_error"),
    "output_flood": ("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024 * 1024)", "ok"),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "code_error"),
    "kill_init": ("import os, signal\nos.kill(1, signal.SIGKILL)", "code_error"),
    "close_pipes": ("import os\nfor fd in range(3, 256):\n    try:\n        os.close(fd)\n    except OSError:\n        pass", "kernel_died"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "kernel_died"),
    "os_exit": ("import os\nos._exit(7)", "kernel_died"),
    "self_signal": ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", "kernel_died"),
    "alarm": ("import signal, time\nsignal.alarm(1)\ntime.sleep(10)", "kernel_died"),
    "write_to_fd_1": ("import os\nos.write(1, b'garbage' * 1000)\nprint('still here')", "ok"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_is_contained(pool, name):
    code, expected = HOSTILE[name]
    # A cell that must end on its own gets room on a loaded machine; one that must time out, the 3 s.
    result = run_once(pool, code, memory_mb=1024, processes=32, **({} if expected == "timeout" else {"timeout_s": 15}))
    assert result.status == expected, (result.status, result.stderr[-500:])
    if name == "output_flood":
        assert len(result.stdout) < 10_000 and "truncated" in result.stdout
    if name in ("read_shadow", "read_home"):
        assert "No such file" in result.stderr or "Permission denied" in result.stderr
    assert live_session_processes() == []  # nothing of the session outlives it
    assert_next_kernel_works(pool)


def test_no_network_not_even_the_hosts_loopback(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    server.settimeout(3)
    threading.Thread(target=lambda: accepted.append(server.accept()) if True else None, daemon=True).start()
    code = (
        "import socket\n"
        f"for host, port in (('127.0.0.1', {port}), ('8.8.8.8', 53), ('1.1.1.1', 443)):\n"
        "    try:\n        socket.create_connection((host, port), timeout=1)\n        print('connected', host)\n"
        "    except OSError as exc:\n        print('refused', host, type(exc).__name__)\n"
    )
    result = run_once(pool, code)
    server.close()
    assert result.status == "ok" and "connected" not in result.stdout
    assert result.stdout.count("refused") == 3
    assert accepted == []


def test_missing_bubblewrap_refuses_unless_unisolated_is_allowed(monkeypatch, capsys):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="bubblewrap.*allow_unisolated"):
        KernelPool(SandboxConfig()).start()
    result = PythonKernel([], KernelPool(SandboxConfig()), KernelConfig()).execute("print(1)")
    assert result.status == "sandbox_unavailable"
    with KernelPool(SandboxConfig(allow_unisolated=True)) as unisolated:
        assert unisolated.mode == "none"
        assert "SANDBOX DISABLED" in capsys.readouterr().err
        with PythonKernel([png()], unisolated) as kernel:
            assert kernel.execute("print(image_1.size)").stdout.strip() == "(120, 90)"


def test_bubblewrap_is_run_from_where_the_callers_path_finds_it(tmp_path, monkeypatch):
    """The sandbox starts with a scrubbed PATH: a bwrap outside it (~/.local/bin, a conda env) must still be the one run."""
    import shutil

    real = shutil.which("bwrap")
    calls = tmp_path / "calls"
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "bwrap"
    wrapper.write_text(f'#!/bin/sh\necho run >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")  # found before the system one
    with KernelPool(SandboxConfig(isolation="bwrap")) as private:
        assert private.mode == "bwrap"
        with PythonKernel([png()], private) as kernel:
            assert kernel.execute("print(image_1.size)").stdout.strip() == "(120, 90)"
    assert calls.read_text().split() == ["run", "run"]  # the probe, then the sandbox itself


def test_working_directory_is_removed_with_the_session(pool):
    with PythonKernel([], pool) as first:
        where = first.execute("import os\nopen('note.txt', 'w').write('x')\nprint(os.getcwd())").stdout.strip()
    with PythonKernel([], pool) as second:
        assert second.execute(f"import os\nprint(os.path.exists({where!r} + '/note.txt'))").stdout.strip() == "False"


def test_sandbox_exec_command(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "cell.py").write_text("print(image_1.size)\nimage_1.show()\n")
    (tmp_path / "spin.py").write_text("while True:\n    pass\n")
    (tmp_path / "in.png").write_bytes(png((300, 200)))
    run = lambda *args: subprocess.run([sys.executable, "-m", "flows.cli", "sandbox", "exec", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    ok = json.loads(run(str(tmp_path / "cell.py"), "--image", str(tmp_path / "in.png")).stdout)
    assert ok["status"] == "ok" and ok["stdout"].strip() == "(300, 200)"
    assert ok["images"] == {"count": 1, "sizes": [[300, 200]]} and ok["duration_ms"] > 0
    spin = json.loads(run(str(tmp_path / "spin.py"), "--timeout", "1").stdout)
    assert spin["status"] == "timeout"
    missing = run(str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and "file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_opencv_is_available_in_the_sandbox(pool):
    result = run_once(pool, "import cv2, numpy as np\nprint(cv2.cvtColor(np.asarray(image_1), cv2.COLOR_RGB2GRAY).shape)")
    assert (result.status, result.stdout.strip()) == ("ok", "(90, 120)")


def test_an_empty_crop_is_a_code_error_and_the_session_lives_on(pool):
    with PythonKernel([png((300, 200))], pool, KernelConfig(timeout_s=5)) as kernel:
        assert kernel.execute("zoom = 3\nseen = image_1.size").status == "ok"
        result = kernel.execute("print('before')\nimage_1.crop((150, 100, 150, 140)).show()")
        assert result.status == "code_error" and result.stdout.strip() == "before"
        assert "image_1.crop((150, 100, 150, 140)).show()" in result.stderr  # the traceback quotes the line
        assert "empty image (0x40 pixels)" in result.stderr and "kernel_worker" not in result.stderr
        after = kernel.execute("print(zoom, seen)")
        assert (after.status, after.stdout.strip()) == ("ok", "3 (300, 200)")  # the same session, its variables intact


def test_a_cell_that_times_out_keeps_what_it_printed_and_the_next_cell_starts_fresh(pool):
    with PythonKernel([png()], pool, KernelConfig(timeout_s=1.0)) as kernel:
        kernel.execute("kept = 1")
        result = kernel.execute("import sys\nprint('partial result 42', flush=True)\nprint('to stderr', file=sys.stderr)\n"
                                "try:\n    while True:\n        pass\nexcept Exception:\n    pass")
        assert result.status == "timeout" and result.stdout == "partial result 42\n"
        assert result.stderr == "to stderr\nError: execution timed out after 1 s."
        assert 900 <= result.duration_ms < 1000 * (1.0 + 2.0)
        after = kernel.execute("print('kept' in globals(), image_1.size)")
        assert after.status == "ok" and after.stdout.strip() == "False (120, 90)"  # a fresh session, its images loaded again
        assert after.stderr.startswith("Note: the kernel was restarted")


def test_an_input_image_the_kernel_cannot_open_is_named_not_a_bare_kernel_death(pool):
    with PythonKernel([png(), b"not an image"], pool, KernelConfig(timeout_s=5)) as kernel:
        result = kernel.execute("print(1)")
    assert result.status == "kernel_died"
    assert result.stderr == "Error: the Python kernel failed to start: input image 2 cannot be opened (not an image format pillow knows)"


def test_sandbox_exec_names_a_file_that_is_not_text_an_image_that_is_not_one_and_a_bad_timeout(tmp_path):
    import subprocess
    import sys

    (tmp_path / "cell.py").write_text("print(1)\n")
    (tmp_path / "binary.py").write_bytes(b"\x00\xc4\xff\x01")
    (tmp_path / "wide.py").write_bytes("print(1)\n".encode("utf-16"))
    (tmp_path / "fake.png").write_bytes(b"text, not pixels")
    run = lambda *args: subprocess.run([sys.executable, "-m", "flows.cli", "sandbox", "exec", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    cell = str(tmp_path / "cell.py")
    for args, expected in [
        ((str(tmp_path / "binary.py"),), f"file {tmp_path / 'binary.py'} is not UTF-8 text (byte 0xc4 at offset 1): is it a binary file?"),
        ((str(tmp_path / "wide.py"),), f"file {tmp_path / 'wide.py'} is UTF-16 text: save it as UTF-8"),
        ((str(tmp_path),), f"file is a directory, not a file: {tmp_path}"),
        ((cell, "--image", str(tmp_path / "fake.png")), f"--image {tmp_path / 'fake.png'}: not an image (pillow knows no such format)"),
        ((cell, "--image", str(tmp_path)), f"--image {tmp_path}: a directory, not an image file"),
        ((cell, "--timeout", "0"), "--timeout: Input should be greater than 0 (got 0.0)"),
    ]:
        done = run(*args)
        assert done.returncode == 2 and done.stderr.strip() == f"error: {expected}", (args, done.stderr[-2000:])

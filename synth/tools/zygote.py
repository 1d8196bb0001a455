"""The zygote: a warm Python process inside the sandbox that forks one kernel per session.

numpy, PIL and matplotlib are imported once here, so a new session is a `fork()` (about a
millisecond) instead of a Python start-up with imports (hundreds). Started by
`synth.tools.sandbox.KernelPool` as `python -c "from synth.tools.zygote import main; main()" CTRL_FD BASE DROP`.

Control messages arrive on a SOCK_SEQPACKET socket, each session's channel as a passed file
descriptor. Each session runs in its own process group under its own uid (when the zygote may
change uid), with rlimits, in a private 0700 working directory, so sessions cannot see, signal or
outlive one another: to end a session a helper with the session's uid kills every process of
that uid in the sandbox's PID namespace, however it tried to escape its process group.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1
_MB = 1024 * 1024


def _preload() -> None:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps  # noqa: F401

    from synth.tools import kernel_worker

    kernel_worker.install_display_hooks()
    # Warm the paths every session takes (image plugins load lazily on first open and save), so
    # forked sessions start hot instead of each paying for them.
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    Image.init()
    warm = Image.open(io.BytesIO(base64.b64decode(base64.b64encode(buffer.getvalue())))).convert("RGB")
    kernel_worker.fit_image(warm, 32, 200.0, 4_000_000).save(io.BytesIO(), format="PNG")


def _reap(helpers: dict[int, str]) -> None:
    """Collect exited sessions and kill helpers; a finished helper's (now empty) directory goes."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        workdir = helpers.pop(pid, None)
        if workdir is not None:
            try:
                os.rmdir(workdir)
            except OSError:
                pass


def _session_child(channel_fd: int, ctrl: socket.socket, request: dict, base: str, drop: bool) -> None:
    """In the forked child: confine this process, then serve the session. Never returns."""
    code = 0
    try:
        ctrl.close()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # a cell writing to fd 1 or 2 directly writes to nowhere
            os.dup2(devnull, fd)
        uid, limits = request["uid"], request["limits"]
        workdir = os.path.join(base, f"k-{uid}")
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        if drop:
            os.chown(workdir, uid, uid)
        for name, value in (
            ("RLIMIT_AS", limits["memory_mb"] * _MB),
            ("RLIMIT_CPU", limits["cpu_s"]),
            ("RLIMIT_FSIZE", limits["file_size_mb"] * _MB),
            ("RLIMIT_NOFILE", limits["open_files"]),
            ("RLIMIT_CORE", 0),
        ):
            resource.setrlimit(getattr(resource, name), (value, value))
        if drop:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        # After the uid change, which clears it: die with the zygote.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.chdir(workdir)
        os.environ.update({"HOME": workdir, "TMPDIR": workdir, "MPLCONFIGDIR": workdir})
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from synth.tools import kernel_worker

        kernel_worker.serve(socket.socket(fileno=channel_fd))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _kill_session(request: dict, base: str, drop: bool, helpers: dict[int, str]) -> None:
    """Kill a session's processes and remove its directory, without making the caller wait:
    the uid-wide sweep runs in a helper reaped later (the pool does not reuse the uid soon)."""
    uid, pid = request["uid"], request["pid"]
    workdir = os.path.join(base, f"k-{uid}")
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if not drop:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    helper = os.fork()
    if helper == 0:  # as the session's uid: kill(-1) reaches exactly that uid's processes
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            os._exit(0)
    helpers[helper] = workdir


def main() -> None:
    ctrl_fd, base, drop = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    ctrl = socket.socket(fileno=ctrl_fd)
    os.makedirs(base, mode=0o711, exist_ok=True)
    _preload()
    helpers: dict[int, str] = {}  # kill helpers still running: pid -> the directory they clean
    ctrl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctrl, 65536, 1)
        except OSError:
            return
        if not data:  # the pool went away: so do we (and, by PDEATHSIG, every session)
            return
        _reap(helpers)
        request = json.loads(data)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _session_child(fds[0], ctrl, request, base, drop)
            os.close(fds[0])
            reply = {"pid": pid}
        elif request["op"] == "kill":
            for fd in fds:
                os.close(fd)
            _kill_session(request, base, drop, helpers)
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown op {request['op']!r}"}
        ctrl.send(json.dumps(reply).encode())

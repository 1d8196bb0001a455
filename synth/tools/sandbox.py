"""The sandbox around model-written code: bubblewrap around a warm zygote, one uid per session.

Isolation is enforced, not requested. Under bubblewrap the zygote sees a read-only view of only
what Python needs (system libraries, the Python installation, the virtual environment, the kernel
package), a private `/tmp`, its own network namespace (loopback only, and nothing listening), its
own PID, IPC and UTS namespaces, and no capabilities but the four it needs to start sessions
under their own uids. When bubblewrap is missing the pool refuses to start, unless the config
explicitly allows an unisolated mode, and then it says so loudly.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from curation.strict_config import StrictConfig

log = logging.getLogger(__name__)

_SYNTH_DIR = Path(__file__).resolve().parents[1]  # the whole `synth` package: the zygote imports `synth.tools.*`
_PROJECT_ROOT = _SYNTH_DIR.parent


class SandboxConfig(StrictConfig):
    isolation: Literal["auto", "bwrap", "none"] = "auto"  # auto: bwrap when it works
    allow_unisolated: bool = False  # auto without bwrap: run unisolated (loudly) instead of refusing
    ready_timeout_s: float = Field(120.0, gt=0)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start; the message says why and what to do."""


def _find_bwrap() -> tuple[str | None, str | None]:
    """bubblewrap's absolute path when it can build the namespaces we need, else why not.

    The path is found on the caller's PATH and used as is: the sandbox starts with a scrubbed PATH,
    which would miss a bwrap in, say, ~/.local/bin or a conda environment."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--die-with-parent", "true"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        return None, f"bubblewrap cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return bwrap, None


def _ro_binds() -> list[Path]:
    """What the zygote may read: the Python installation, the venv, the kernel package."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), _SYNTH_DIR}
    for entry in sys.path:  # site-packages outside the prefixes (e.g. a user's PYTHONPATH)
        path = Path(entry)
        if path.is_dir() and "site-packages" in path.parts:
            paths.add(path.resolve())
    system = [Path("/usr"), Path("/lib"), Path("/lib64"), Path("/bin")]
    # Drop what another bind (or the system binds) already shows.
    return sorted(p for p in paths if not any(p != q and p.is_relative_to(q) for q in [*paths, *system]))


def _interpreter_paths() -> list[str]:
    """The interpreter's paths as this process spells them (the zygote is started by the same
    names, and Python finds its venv from the name it was started by)."""
    paths = [sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths += [entry for entry in sys.path if entry and "site-packages" in Path(entry).parts]
    return [os.path.abspath(p) for p in paths if p]


def _symlinks_along(path: str, max_links: int = 40) -> list[tuple[str, str]]:
    """The symbolic links the kernel follows to reach `path`, as (link, target as written) pairs:
    a link in a parent folder (a venv reached through a symlinked home or scratch space) and in the
    name itself (`bin/python -> python3.11`), and the links along each target in turn."""
    found: list[tuple[str, str]] = []
    pending = [os.path.abspath(path)]
    while pending and len(found) < max_links:
        parts = Path(pending.pop()).parts
        walked = Path(parts[0])
        for i, part in enumerate(parts[1:], start=1):
            candidate = walked / part
            if candidate.is_symlink():
                target = os.readlink(candidate)
                found.append((str(candidate), target))
                # `walked` holds no link (the walk stops at the first), so `..` in a relative target is plain.
                pending.append(os.path.normpath(os.path.join(walked, target, *parts[i + 1:])))
                break
            walked = candidate
    return found


def _mirrored_symlinks(binds: list[Path]) -> list[tuple[str, str]]:
    """The links on the way to the interpreter that the sandbox's view lacks (outside every bind
    and system folder): recreated inside, so it starts however its path was spelled."""
    shown = [*binds, *(Path("/") / top for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"))]
    links: dict[str, str] = {}
    for path in _interpreter_paths():
        for link, target in _symlinks_along(path):
            if not any(Path(link).is_relative_to(b) for b in shown):
                links.setdefault(link, target)
    return sorted(links.items(), key=lambda lt: len(Path(lt[0]).parts))


def bwrap_command(bwrap: str, argv: list[str]) -> list[str]:
    """`argv` inside the sandbox, run by the bubblewrap at `bwrap` (the path `_find_bwrap` returned)."""
    command = [
        bwrap,
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session",
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "0711", "--tmpfs", "/tmp",
        "--cap-drop", "ALL",
    ]
    if os.geteuid() == 0:  # to start each session under its own uid, and end it
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN"):
            command += ["--cap-add", cap]
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            command += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            command += ["--ro-bind", str(host), str(host)]
    for etc in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "localtime", "alternatives"):
        command += ["--ro-bind-try", f"/etc/{etc}", f"/etc/{etc}"]
    binds = _ro_binds()
    links = _mirrored_symlinks(binds)
    # Parents that bwrap would create get mode 0700, which a session's uid could not traverse.
    wanted = [*binds, *(Path(link) for link, _ in links)]
    parents = sorted({p for path in wanted for p in path.parents if p != Path("/")} - set(wanted), key=lambda p: len(p.parts))
    for parent in parents:
        if not any(parent.is_relative_to(b) for b in binds) and parent.parts[1] not in ("usr", "lib", "lib64", "bin"):
            command += ["--perms", "0755", "--dir", str(parent)]
    for path in binds:
        command += ["--ro-bind", str(path), str(path)]
    for link, target in links:
        command += ["--symlink", target, link]
    return command + argv


class KernelPool:
    """One zygote for many sessions; thread-safe. Start once per stage, share across trajectories."""

    def __init__(self, cfg: SandboxConfig | None = None) -> None:
        self.cfg = cfg or SandboxConfig()
        self.mode: str | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ctrl: socket.socket | None = None
        self._log = None
        self._uids: set[int] = set()
        self._next_uid = 0  # round-robin: a uid is reused only after 10,000 sessions
        self._host_base: str | None = None  # the sessions' directory when unisolated
        self._bwrap: str | None = None  # bubblewrap's absolute path once found
        # A random uid range per pool, so two pools on one machine do not share process limits.
        self._uid_base = 200_000 + random.SystemRandom().randrange(0, 1_000_000, 10_000)

    def _resolve_mode(self) -> str:
        if self.cfg.isolation == "none":
            return "none"
        self._bwrap, problem = _find_bwrap()
        if problem is None:
            return "bwrap"
        if self.cfg.isolation == "auto" and self.cfg.allow_unisolated:
            message = f"SANDBOX DISABLED: model-written code runs WITHOUT isolation ({problem})"
            log.warning(message)
            print(f"WARNING: {message}", file=sys.stderr)
            return "none"
        raise SandboxUnavailable(
            f"the Python sandbox cannot start: {problem}; "
            "or set sandbox.allow_unisolated: true to run model code without isolation"
        )

    def start(self) -> KernelPool:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            self.mode = self._resolve_mode()
            drop = self.mode == "bwrap" and os.geteuid() == 0
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            if self.mode == "bwrap":
                base = "/tmp/kernels"  # inside the sandbox's private /tmp
            else:
                base = self._host_base = tempfile.mkdtemp(prefix="deepeyes-kernels-")
            argv = [sys.executable, "-I", "-c",
                    f"import sys; sys.path.insert(0, {str(_PROJECT_ROOT)!r}); from synth.tools.zygote import main; main()",
                    str(theirs.fileno()), base, "1" if drop else "0"]
            command = bwrap_command(self._bwrap, argv) if self.mode == "bwrap" else argv
            env = {  # scrubbed: no API keys or user settings reach model-written code
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "MPLBACKEND": "module://synth.tools.kernel_backend",
                "MPLCONFIGDIR": "/tmp" if self.mode == "bwrap" else base,
                "PYTHONDONTWRITEBYTECODE": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
            }
            self._log = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
            )
            theirs.close()
            ours.settimeout(self.cfg.ready_timeout_s)
            try:
                json.loads(ours.recv(65536) or b"null")["ready"]
            except (OSError, TypeError, KeyError, ValueError):
                self._terminate()
                raise SandboxUnavailable(f"the Python sandbox did not start ({self.mode}): {self._stderr_tail()}") from None
            ours.settimeout(None)
            self._ctrl = ours
            return self

    def _stderr_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace").strip() or "no output"

    def _call(self, request: dict, fds: list[int] = ()) -> dict:
        assert self._ctrl is not None
        socket.send_fds(self._ctrl, [json.dumps(request).encode()], list(fds))
        data = self._ctrl.recv(65536)
        if not data:
            raise ConnectionError("the sandbox zygote died")
        return json.loads(data)

    def spawn(self, limits: dict) -> tuple[socket.socket, dict]:
        """A new session: (the pipeline's end of its channel, a handle for `kill`)."""
        self.start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            for _ in range(10_000):
                uid = self._uid_base + self._next_uid
                self._next_uid = (self._next_uid + 1) % 10_000
                if uid not in self._uids:
                    break
            self._uids.add(uid)
            try:
                reply = self._call({"op": "spawn", "uid": uid, "limits": limits}, [theirs.fileno()])
            except (OSError, ConnectionError):
                self._uids.discard(uid)
                self._terminate()
                raise
            finally:
                theirs.close()
        return ours, {"uid": uid, "pid": reply["pid"]}

    def kill(self, handle: dict) -> None:
        """End a session and everything it started; remove its working directory."""
        with self._lock:
            try:
                if self._ctrl is not None:
                    self._call({"op": "kill", **handle})
            except (OSError, ConnectionError):
                self._terminate()
            finally:
                self._uids.discard(handle["uid"])

    def _terminate(self) -> None:
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, 9)
            except ProcessLookupError:
                pass
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._terminate()
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._host_base is not None:
                shutil.rmtree(self._host_base, ignore_errors=True)
                self._host_base = None

    def __enter__(self) -> KernelPool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

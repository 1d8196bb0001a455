"""The code inside one kernel session: runs cells in a namespace that lives as long as the session.

It runs in a process the zygote (`synth.tools.zygote`) forked for one trajectory, already inside the
sandbox, under the session's own uid. It talks to the pipeline over one socket with
length-prefixed JSON frames (`synth.tools.wire`), never over stdin/stdout, so code that writes to file
descriptor 1 cannot corrupt the channel. Stdout and stderr of a cell are captured in-process and
capped while they are written, so 100 MB of output never piles up in memory.
"""

from __future__ import annotations

import base64
import contextlib
import io
import linecache
import sys
import traceback

from synth.tools import wire

SHOWN_IMAGES: list = []  # PIL images and figures displayed by the current cell


class CappedStream(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def value(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n... [truncated {self.dropped} characters]" if self.dropped else "")


def install_display_hooks() -> None:
    from PIL import Image

    def _show(self, title=None, **_kwargs):  # PIL's Image.show opens a viewer; we capture instead
        if self.width < 1 or self.height < 1:  # raised in the cell, so its traceback names the line
            raise ValueError(f"cannot show an empty image ({self.width}x{self.height} pixels): "
                             "a crop box needs right > left and bottom > top")
        SHOWN_IMAGES.append(self.copy())

    Image.Image.show = _show


def fit_image(image, min_side: int, max_aspect: float, max_pixels: int):
    """Bring an image within a vision encoder's limits: min side, aspect ratio, pixel budget."""
    image = image.convert("RGB")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"an empty image ({width}x{height} pixels) cannot be shown")
    if max(width, height) / max(1, min(width, height)) > max_aspect:  # crop the long side
        if width > height:
            width = int(height * max_aspect)
        else:
            height = int(width * max_aspect)
        image = image.crop((0, 0, width, height))
    if width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    if min(width, height) < min_side:
        scale = min_side / min(width, height)
        width, height = max(min_side, round(width * scale)), max(min_side, round(height * scale))
    return image if (width, height) == image.size else image.resize((width, height))


def _encode_images(request: dict) -> tuple[list[str], list[str]]:
    """The shown images as PNG (base64), and an error line for each that could not be encoded."""
    encoded, errors = [], []
    for number, image in enumerate(SHOWN_IMAGES[: request.get("max_images", 10)], start=1):
        try:
            image = fit_image(image, request.get("min_side", 32), request.get("max_aspect", 200.0), request.get("max_pixels", 4_000_000))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
        except MemoryError:
            raise
        except Exception as exc:  # one bad image is the cell's error, never the session's end
            errors.append(f"Error: shown image {number} could not be returned: {type(exc).__name__}: {exc}")
            continue
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    SHOWN_IMAGES.clear()
    return encoded, errors


def _print_cell_traceback(etype, value, tb) -> None:
    """The traceback of a failed cell, without this module's frames (the exec call, the display hook)."""
    report = traceback.TracebackException(etype, value, tb)
    report.stack = traceback.StackSummary.from_list([frame for frame in report.stack if frame.filename != __file__])
    print("".join(report.format()), end="", file=sys.stderr)


class CellTimeout(BaseException):
    """Raised in the cell when its wall time is up (a BaseException, so `except Exception` in the
    model's code does not swallow it)."""


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise `CellTimeout` in this (the main) thread after `seconds` of wall time, so a cell that
    runs too long stops with what it printed so far. Code stuck in C does not see the signal: the
    pipeline's own deadline, a little later, kills the session then (and its output is lost)."""
    import os
    import signal
    import threading
    import time

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    ends = time.monotonic() + seconds

    def _raise(signum, frame):
        if time.monotonic() >= ends - 0.05:
            raise CellTimeout
        # The cell's own alarm (`signal.alarm`): what it would do without us, end the session.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cell(namespace: dict, request: dict) -> dict:
    limit = request.get("output_limit", 8000)
    stdout, stderr = CappedStream(limit), CappedStream(limit)
    status = "ok"
    code = request["code"]
    # Registered so tracebacks quote the cell's lines (the model sees which line failed).
    linecache.cache["<cell>"] = (len(code), None, code.splitlines(True), "<cell>")
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            with _deadline(request.get("timeout_s")):
                exec(compile(code, "<cell>", "exec"), namespace)
        except CellTimeout:  # also when it fires as the cell ends, before the timer is cancelled
            status = "timeout"
        except MemoryError:
            status = "memory_exceeded"
            print("MemoryError: the cell exceeded the kernel's memory limit", file=sys.stderr)
        except BaseException:  # the model's code may raise anything, SystemExit included
            status = "code_error"
            _print_cell_traceback(*sys.exc_info())
    try:
        images, errors = _encode_images(request)
    except MemoryError:
        status, images, errors = "memory_exceeded", [], []
    if errors:
        status = "code_error" if status == "ok" else status
        stderr.write("\n".join(errors) + "\n")
    return {"status": status, "stdout": stdout.value(), "stderr": stderr.value(), "images": images}


def serve(sock) -> None:
    """Answer `init` (preload the images) and `exec` requests until the pipeline hangs up."""
    from PIL import Image

    namespace: dict = {"__name__": "__main__"}
    while True:
        try:
            request = wire.recv(sock)
        except (wire.ChannelClosed, OSError):
            return
        if request["op"] == "init":
            reply = {"status": "ok"}
            for i, data in enumerate(request["images"], start=1):
                try:
                    namespace[f"image_{i}"] = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
                except Exception as exc:  # not an image: the session cannot start as asked; say which and why
                    reason = "not an image format pillow knows" if type(exc).__name__ == "UnidentifiedImageError" else f"{type(exc).__name__}: {exc}"
                    reply = {"status": "error", "error": f"input image {i} cannot be opened ({reason})"}
                    break
        else:
            try:
                reply = run_cell(namespace, request)
            except Exception as exc:  # a fault outside the cell's own code: reported, and the session lives on
                SHOWN_IMAGES.clear()
                reply = {"status": "code_error", "stdout": "", "stderr": f"Error: the kernel could not run the cell: {type(exc).__name__}: {exc}",
                         "images": []}
        try:
            wire.send(sock, reply)
        except OSError:  # the cell closed our socket, or the pipeline went away
            return

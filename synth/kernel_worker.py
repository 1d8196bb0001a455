"""The code inside one kernel session: runs cells in a namespace that lives as long as the session.

It runs in a process the zygote (`synth.zygote`) forked for one trajectory, already inside the
sandbox, under the session's own uid. It talks to the pipeline over one socket with
length-prefixed JSON frames (`synth.wire`), never over stdin/stdout, so code that writes to file
descriptor 1 cannot corrupt the channel. Stdout and stderr of a cell are captured in-process and
capped while they are written, so 100 MB of output never piles up in memory.
"""

from __future__ import annotations

import base64
import contextlib
import io
import sys
import traceback

from synth import wire

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
        SHOWN_IMAGES.append(self.copy())

    Image.Image.show = _show


def fit_image(image, min_side: int, max_aspect: float, max_pixels: int):
    """Bring an image within a vision encoder's limits: min side, aspect ratio, pixel budget."""
    image = image.convert("RGB")
    width, height = image.size
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


def _encode_images(request: dict) -> list[str]:
    encoded = []
    for image in SHOWN_IMAGES[: request.get("max_images", 10)]:
        image = fit_image(image, request.get("min_side", 32), request.get("max_aspect", 200.0), request.get("max_pixels", 4_000_000))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    SHOWN_IMAGES.clear()
    return encoded


def run_cell(namespace: dict, request: dict) -> dict:
    limit = request.get("output_limit", 8000)
    stdout, stderr = CappedStream(limit), CappedStream(limit)
    status = "ok"
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            exec(compile(request["code"], "<cell>", "exec"), namespace)
        except MemoryError:
            status = "memory_exceeded"
            print("MemoryError: the cell exceeded the kernel's memory limit", file=sys.stderr)
        except BaseException:  # the model's code may raise anything, SystemExit included
            status = "code_error"
            etype, value, tb = sys.exc_info()
            traceback.print_exception(etype, value, tb.tb_next if tb else None)
    try:
        images = _encode_images(request)
    except MemoryError:
        status, images = "memory_exceeded", []
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
            for i, data in enumerate(request["images"], start=1):
                namespace[f"image_{i}"] = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            reply = {"status": "ok"}
        else:
            reply = run_cell(namespace, request)
        try:
            wire.send(sock, reply)
        except OSError:  # the cell closed our socket, or the pipeline went away
            return

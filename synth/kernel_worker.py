"""The process behind one Python kernel. Started by `synth.kernel.PythonKernel`, never imported.

Requests and replies are JSON lines on two private pipe descriptors (not stdin/stdout, so code
that writes to file descriptor 1 cannot corrupt the channel). Each request runs in one namespace
that persists across requests: the trajectory's state.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import sys
import traceback

SHOWN_IMAGES: list = []  # PIL images and figures displayed by the current cell


def _install_display_hooks() -> None:
    from PIL import Image

    def _show(self, title=None, **_kwargs):  # PIL's Image.show opens a viewer; we capture instead
        SHOWN_IMAGES.append(self.copy())

    Image.Image.show = _show


def _encode_images(max_images: int, min_side: int) -> list[str]:
    encoded = []
    for image in SHOWN_IMAGES[:max_images]:
        image = image.convert("RGB")
        if min(image.size) < min_side:  # too small for a vision encoder: upscale keeping aspect
            scale = min_side / min(image.size)
            image = image.resize((max(min_side, round(image.width * scale)), max(min_side, round(image.height * scale))))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    SHOWN_IMAGES.clear()
    return encoded


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... [truncated {len(text) - limit} characters]"


def main() -> None:
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    _install_display_hooks()
    namespace: dict = {"__name__": "__main__"}
    for line in reader:
        request = json.loads(line)
        if request["op"] == "init":
            from PIL import Image

            for i, data in enumerate(request["images"], start=1):
                namespace[f"image_{i}"] = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
            reply = {"status": "ok"}
        else:
            stdout, stderr = io.StringIO(), io.StringIO()
            status = "ok"
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    exec(compile(request["code"], "<cell>", "exec"), namespace)
                except MemoryError:
                    status = "memory_exceeded"
                    traceback.print_exc(limit=1)
                except BaseException:  # the model's code may raise anything, SystemExit included
                    status = "code_error"
                    etype, value, tb = sys.exc_info()
                    traceback.print_exception(etype, value, tb.tb_next if tb else None)
            limit = request.get("output_limit", 8000)
            reply = {
                "status": status,
                "stdout": _cap(stdout.getvalue(), limit),
                "stderr": _cap(stderr.getvalue(), limit),
                "images": _encode_images(request.get("max_images", 10), request.get("min_side", 32)),
            }
        writer.write(json.dumps(reply) + "\n")
        writer.flush()


if __name__ == "__main__":
    main()

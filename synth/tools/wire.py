"""Length-prefixed JSON frames over a stream socket: the kernel channel's only format."""

from __future__ import annotations

import json
import socket
import struct
import time

_HEADER = struct.Struct("!I")
MAX_FRAME = 512 * 1024 * 1024


class ChannelClosed(Exception):
    """The other end hung up (or sent something that is not a frame)."""


class ChannelTimeout(Exception):
    """No complete frame before the deadline."""


def send(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(remaining, 1 << 20))
        except TimeoutError:
            raise ChannelTimeout() from None
        if not chunk:
            raise ChannelClosed()
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, timeout: float | None = None) -> dict:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
        if size > MAX_FRAME:
            raise ChannelClosed()
        return json.loads(_recv_exact(sock, size, deadline))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChannelClosed() from exc
    finally:
        if deadline is not None:
            sock.settimeout(None)

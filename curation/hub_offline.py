"""A hub dataset when the Hugging Face Hub cannot be reached: read from the local cache only.

Without network, `datasets.load_dataset("org/name")` spends about 25 s in `huggingface_hub`'s
retries (`Retrying in 8s [Retry 4/5]` lines on stderr) before it fails. A 3-second probe of the
Hub's host first (`hub_unreachable`) tells that case apart; the load then runs in offline mode
(`hub_offline`: the cache, or an error at once), as `HF_HUB_OFFLINE=1` would make it. A user's
`HF_HUB_OFFLINE` or a proxy (which a direct probe cannot judge) turns the probe off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from curation.counted_switch import CountedSwitch


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the Hub (`HF_ENDPOINT`) cannot be reached (`huggingface.co: Name or service not known`:
    its host does not resolve, or accepts no connection within `timeout_s`); None when it can, when
    offline mode is on already, or behind a proxy."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as exc:
        return f"{url.hostname}: {exc.strerror or exc}"
    return None


def _offline_switches() -> tuple[bool, bool]:
    import datasets
    from huggingface_hub import constants

    return datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE


def _set_offline_switches(values: tuple[bool, bool]) -> None:
    import datasets
    from huggingface_hub import constants

    datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = values


_OFFLINE = CountedSwitch(_offline_switches, _set_offline_switches)


@contextmanager
def hub_offline(on: bool = True) -> Iterator[None]:
    """Within the block (when `on`), `datasets` and `huggingface_hub` are in offline mode; after the
    last such block ends (in any thread), their switches are as the first found them."""
    if not on:
        yield
        return
    with _OFFLINE.held((True, True)):
        yield

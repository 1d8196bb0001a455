"""`datasets`' progress bars off while one of our loads runs, and back as they were after.

`datasets.load_dataset` prints `Generating train split: 4 examples ...` (and more bars) on stderr
for every local file it turns into a dataset, which buries the command line's and the flows' own
lines. `datasets` has only a process-wide switch (`disable_progress_bars`/`enable_progress_bars`),
so the switch is counted: the first load to start turns the bars off, the last one to end puts back
what it found (scan tasks load sources in parallel threads). A user's
`HF_DATASETS_DISABLE_PROGRESS_BARS=0` (bars wanted) is left alone.

`huggingface_hub` logs each failed request and retry of a Hub id's load (`'...' thrown while
requesting HEAD https://huggingface.co/...`, `Retrying in 8s [Retry 4/5].`: about a dozen lines when
the Hub cannot be reached); `hub_retry_lines_off` drops those lines while a load runs: the load's
own error says what failed, in one line.

`datasets`' file builders (parquet, csv, json, ...) log an ERROR line for a file they cannot read
(`Failed to read schema from '...' with error ArrowInvalid: ...`) just before they raise the same
error, which our load then tells in its one line; `builder_error_lines_off` drops those lines
while a load runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from curation.counted_switch import CountedSwitch


def _bars_disabled() -> bool:
    from datasets.utils import are_progress_bars_disabled

    return are_progress_bars_disabled()


def _set_bars_disabled(disabled: bool) -> None:
    import datasets

    datasets.disable_progress_bars() if disabled else datasets.enable_progress_bars()


_BARS_DISABLED = CountedSwitch(_bars_disabled, _set_bars_disabled)


@contextmanager
def datasets_progress_bars_off() -> Iterator[None]:
    """Within the block, `datasets` shows no progress bars; after the last such block ends (in any
    thread), its switch is as it was before the first began. Imports `datasets`."""
    import datasets

    if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is False:  # the user asked for them
        yield
        return
    with _BARS_DISABLED.held(True):
        yield


class _RetryLines(logging.Filter):
    """Drops `huggingface_hub`'s per-request retry warnings (`Retrying in 8s [Retry 4/5].`,
    `'...' thrown while requesting HEAD URL`, `HTTP Error 500 thrown while requesting ...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Retrying in ") or " thrown while requesting " in text)


_HUB_HTTP_LOGGER = "huggingface_hub.utils._http"  # where `http_backoff` logs them
_RETRY_FILTER = _RetryLines()


def _retry_filter_on() -> bool:
    return _RETRY_FILTER in logging.getLogger(_HUB_HTTP_LOGGER).filters


def _set_retry_filter(on: bool) -> None:
    logger = logging.getLogger(_HUB_HTTP_LOGGER)
    if on:
        logger.addFilter(_RETRY_FILTER)
    else:
        logger.removeFilter(_RETRY_FILTER)


_RETRY_LINES_OFF = CountedSwitch(_retry_filter_on, _set_retry_filter)


@contextmanager
def hub_retry_lines_off() -> Iterator[None]:
    """Within the block, `huggingface_hub`'s request-retry warnings are not logged; after the last
    such block ends (in any thread), its logger's filters are as the first found them."""
    with _RETRY_LINES_OFF.held(True):
        yield


class _RaisedErrors(logging.Filter):
    """Drops ERROR records (a builder's `Failed to read ...` line before it raises); warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_ERRORS_FILTER = _RaisedErrors()


def _builder_loggers() -> list[logging.Logger]:
    """The loggers of `datasets`' packaged builders (`datasets.packaged_modules.parquet.parquet`, ...):
    each builder is a package holding a module of its name, whose logger is named after the module."""
    import pkgutil

    import datasets.packaged_modules as packaged

    return [logging.getLogger(f"{packaged.__name__}.{m.name}.{m.name}") for m in pkgutil.iter_modules(packaged.__path__) if m.ispkg]


def _errors_filter_on() -> bool:
    return any(_ERRORS_FILTER in logger.filters for logger in _builder_loggers())


def _set_errors_filter(on: bool) -> None:
    for logger in _builder_loggers():
        logger.addFilter(_ERRORS_FILTER) if on else logger.removeFilter(_ERRORS_FILTER)


_ERROR_LINES_OFF = CountedSwitch(_errors_filter_on, _set_errors_filter)


@contextmanager
def builder_error_lines_off() -> Iterator[None]:
    """Within the block, `datasets`' file builders log no ERROR lines (the error they raise next is
    ours to tell); after the last such block ends (in any thread), their loggers' filters are as the
    first found them. Imports `datasets`."""
    with _ERROR_LINES_OFF.held(True):
        yield

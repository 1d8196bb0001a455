"""`datasets`' progress bars off while one of our loads runs, and back as they were after.

`datasets.load_dataset` prints `Generating train split: 4 examples ...` (and more bars) on stderr
for every local file it turns into a dataset, which buries the command line's and the flows' own
lines. `datasets` has only a process-wide switch (`disable_progress_bars`/`enable_progress_bars`),
so the switch is counted: the first load to start turns the bars off, the last one to end puts back
what it found (scan tasks load sources in parallel threads). A user's
`HF_DATASETS_DISABLE_PROGRESS_BARS=0` (bars wanted) is left alone.
"""

from __future__ import annotations

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

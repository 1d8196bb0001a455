"""The base every config model shares, so that one rule holds for every setting."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit (bench.fidelity's --seeds takes the same range)
# A setting's seed: what numpy (and `bench.fidelity --seeds`) takes, so a seed that loads is one every stage can use.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
# The most samples per family (`world.per_family`, `instruct_per_family`) and long-CoT rows (`long_cot`)
# a world is asked for, in a config or on the command line: a learnable world writes a card image per
# sample (kB each), and a typo of extra zeros (1000000000) would fill the disk before anything said so.
MAX_WORLD_SIZE = 100_000


class StrictConfig(BaseModel):
    """A pydantic model that refuses unknown keys (a misspelt setting is an error, never ignored) and
    non-finite numbers (YAML's `.nan`, `.inf`, `-.inf`: no setting of ours means anything at NaN or
    infinity, and a NaN slips through `ge`/`le` bounds as text that says only "greater than").

    Raises `pydantic.ValidationError` on validation, as any model does; the CLI turns it into one
    line per setting, naming the setting and its line in the YAML file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

"""Prefect settings for this project, applied before Prefect is imported.

Prefect's ephemeral mode keeps its SQLite database under PREFECT_HOME (default `~/.prefect`);
we keep it inside the virtual environment instead of the user's home. A user who points
PREFECT_API_URL at a real server, or sets PREFECT_HOME, keeps their own settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def configure_prefect_env() -> None:
    os.environ.setdefault("PREFECT_HOME", str(Path(sys.prefix) / "prefect-home"))
    # Analytics off: it causes "database is locked" tracebacks on the ephemeral SQLite server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The default 20 s start-up limit of the ephemeral server is tight on 2 loaded cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "WARNING")
    # Library progress bars drown the pipeline's own progress lines.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

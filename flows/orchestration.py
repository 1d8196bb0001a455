"""How the flows run: the task runner (threads, Dask or Ray), retries of the tasks that call a model
endpoint, and one Prefect global concurrency limit per endpoint shared by every task, flow run and
deployment that calls it."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field

from curation.strict_config import StrictConfig


class OrchestrationConfig(StrictConfig):
    """The `orchestration:` section of a pipeline config."""

    # threads: one process (the default). dask / ray: the shard tasks run on a cluster's workers;
    # `address` names an existing one (tcp://scheduler:8786, ray://head:10001), else a local one.
    task_runner: Literal["threads", "dask", "ray"] = "threads"
    address: str | None = None
    workers: int = Field(4, ge=1)  # threads, or local Dask / Ray worker processes when no address
    # Requests in flight to one model endpoint across all parallel tasks: each shard task that
    # calls it holds as many slots as it keeps requests in flight (its stage's `concurrency`).
    endpoint_max_in_flight: int = Field(256, ge=1)
    retries: int = Field(3, ge=0)  # of an endpoint-facing task that failed as a whole
    retry_delay_s: float = Field(10.0, ge=0)  # the first retry's delay; doubled each time, with jitter
    retry_jitter: float = Field(0.5, ge=0)


def task_runner(cfg: OrchestrationConfig) -> Any:
    """The Prefect task runner the config names."""
    if cfg.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ImportError("orchestration.task_runner: dask needs prefect-dask: pip install 'open-deepeyes[dask]'") from None
        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        # Processes, one thread each: the stages hold the GIL in Python code (judges, images).
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ImportError("orchestration.task_runner: ray needs prefect-ray: pip install 'open-deepeyes[ray]'") from None
    return RayTaskRunner(address=cfg.address, init_kwargs={} if cfg.address else {"num_cpus": cfg.workers})


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition for endpoint-facing tasks: an endpoint that may answer later (a
    refused connection, time-outs, HTTP 5xx) is tried again; one that never will (a wrong model
    name, a refused request field, a malformed URL) fails the run at once."""
    from synth.runtime.endpoint import EndpointError

    error = getattr(state, "data", None)
    return not (isinstance(error, EndpointError) and not error.transient)


def retry_options(cfg: OrchestrationConfig) -> dict[str, Any]:
    """Task options for endpoint-facing tasks: exponential backoff with jitter, only for failures
    worth retrying (`worth_retrying`). The stages retry single requests themselves; this retries a
    task that failed as a whole (endpoint gone)."""
    from prefect.tasks import exponential_backoff

    return {
        "retries": cfg.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=cfg.retry_delay_s) if cfg.retry_delay_s else 0,
        "retry_jitter_factor": cfg.retry_jitter,
        "retry_condition_fn": worth_retrying,
    }


def endpoint_limit_name(url: str, model: str) -> str:
    """The global concurrency limit's name for one model at one endpoint."""
    parsed = urlparse(url)
    raw = f"endpoint-{parsed.hostname or 'local'}-{parsed.port or ''}-{model}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)


def ensure_endpoint_limit(name: str, limit: int) -> int:
    """Create the endpoint's global concurrency limit when it is missing; an existing one keeps the
    limit its owner set (`prefect gcl update`). Returns the limit in force."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:  # another flow run created it first
                pass
            return client.read_global_concurrency_limit_by_name(name).limit

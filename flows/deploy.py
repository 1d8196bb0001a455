"""`deepeyes deploy`: register a flow with a Prefect server as a deployment on a process work pool,
with a cron schedule (e.g. a weekly cold-start regeneration). A worker started on that pool pulls
the code from this checkout and runs the flow with the config file's path, so an edited config
takes effect at the next scheduled run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINTS = {
    "retrain": "flows/pipeline.py:retrain_flow",
    "curate": "flows/pipeline.py:curate_flow",
    "synthesize": "flows/pipeline.py:synthesize_flow",
    "train_sft": "flows/pipeline.py:train_sft_flow",
    "train_grpo": "flows/pipeline.py:train_grpo_flow",
    "evaluate": "flows/pipeline.py:evaluate_flow",
}


def ensure_process_pool(name: str) -> None:
    """The work pool, created as a `process` pool when missing (an existing pool is left as it is)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass


def deploy_flow(
    flow_name: str, config_path: Path, run_dir: Path, name: str, work_pool: str, cron: str | None, timezone: str = "UTC",
) -> dict[str, Any]:
    """Create or update the deployment; returns its name (`flow/deployment`) and id."""
    ensure_process_pool(work_pool)
    flow = Flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINTS[flow_name])
    deployment_id = flow.deploy(
        name=name,
        work_pool_name=work_pool,
        schedules=[Cron(cron, timezone=timezone)] if cron else None,
        parameters={"config": str(config_path), "run_dir": str(run_dir)},
        description=f"open-deepeyes {flow_name} on {config_path}",
        build=False,
        push=False,
        print_next_steps=False,
    )
    return {"name": f"{flow.name}/{name}", "id": str(deployment_id)}

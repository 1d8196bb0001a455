"""`deepeyes deploy`: register a flow with a Prefect server as a deployment on a process work pool,
with a cron schedule (e.g. a weekly cold-start regeneration). A worker started on that pool pulls
the code from this checkout and runs the flow with the config file's path, so an edited config
takes effect at the next scheduled run.

A deployment needs a Prefect server that outlives the command (`PREFECT_API_URL`): without one,
Prefect would register it in a temporary database that ends with the command, so that is refused,
as a server that does not answer is, each in one line that says how to start one."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Prefect is imported inside the functions: the command line names DeployError without paying for it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINTS = {
    "retrain": "flows/pipeline.py:retrain_flow",
    "curate": "flows/pipeline.py:curate_flow",
    "synthesize": "flows/pipeline.py:synthesize_flow",
    "train_sft": "flows/pipeline.py:train_sft_flow",
    "train_grpo": "flows/pipeline.py:train_grpo_flow",
    "evaluate": "flows/pipeline.py:evaluate_flow",
}


START_SERVER = "start one with `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"


class DeployError(Exception):
    """A deployment that cannot be registered (no Prefect server, a bad schedule); one line for the user."""


def check_schedule(cron: str | None, timezone: str) -> None:
    """Raise `DeployError` for a cron expression or time zone Prefect would refuse (checked before
    anything is registered)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeployError(f"--timezone: unknown time zone {timezone!r} (an IANA name, e.g. UTC or Europe/Berlin)") from None
    if cron is None:
        return
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except (ValidationError, ValueError):
        raise DeployError(f"--cron: {cron!r} is not a cron expression (five fields: minute hour day-of-month month day-of-week, "
                          "e.g. '0 3 * * 1' for Mondays at 03:00)") from None


def require_prefect_server() -> str:
    """The configured Prefect server's API URL, after checking that it answers; `DeployError`
    (one line, with how to start one) when none is configured or it does not answer."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeployError("deepeyes deploy needs a Prefect server and none is configured (PREFECT_API_URL is not set): a deployment "
                          f"registered now would vanish with this command's temporary database; {START_SERVER}")
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        cause = " ".join(str(failure).split())[:200] or type(failure).__name__
        raise DeployError(f"the Prefect server at {url} does not answer ({cause}); {START_SERVER.replace('start one', 'start it')}, "
                          "or point PREFECT_API_URL at a running one")
    return url


def ensure_process_pool(name: str) -> None:
    """The work pool, created as a `process` pool when missing (an existing pool is left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

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
    from prefect import Flow
    from prefect.schedules import Cron

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

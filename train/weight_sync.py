"""The policy's weights into GRPO's vLLM server through a folder on disk (`grpo.vllm.weight_sync: disk`).

TRL's own weight sync broadcasts the tensors into the server's workers over NCCL: it needs CUDA on
both sides, a network path between them for the NCCL group, and `vllm` importable in the trainer.
Where that is impossible (a CPU, a server in another cluster, a trainer environment without vLLM),
the trainer instead saves the weights as a checkpoint folder the server can read, and the server
reloads them in place through its development routes (`VLLM_SERVER_DEV_MODE=1`):

    POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": FOLDER}}
    POST /reset_encoder_cache  (vLLM 0.31's reload empties the workers' cache of image encodings but
                                not the scheduler's record of it: the next request with an image seen
                                before kills the engine with "Encoder cache miss")
    POST /reset_prefix_cache   (cached prefixes were computed with the old weights)

(vLLM 0.31; about 0.05 s for a tiny model, a full checkpoint read for a large one: the price of this
path is a save and a load per optimizer step.) On a CPU server, a reload does not reach an LM head
tied to the embeddings: the CPU backend multiplies with a packed copy of the head made at load time,
and the reload skips the tied head (`train.grpo.check_disk_sync_server` refuses that setup).

Generation itself is plain HTTP, so this path needs no `vllm` in the trainer's environment.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train.sft import TrainingSetupError

logger = logging.getLogger(__name__)


class WeightSyncError(TrainingSetupError):
    """The server did not take the weights (names the folder and the server's answer)."""


def http_vllm_client(base_url: str, connection_timeout: float = 0.0):
    """TRL's `VLLMClient` for generation and the development routes, also where `vllm` does not import.

    TRL's client refuses to start without `vllm` because its NCCL weight sync needs it; what the
    rollouts and the disk sync call (`/health`, `/v1/models`, `/v1/chat/completions/render`,
    `/inference/v1/generate`, `/reset_prefix_cache`) is plain HTTP. The check is lifted for the
    constructor only. Raises TRL's `ConnectionError` when the server does not answer within
    `connection_timeout` seconds."""
    from trl.generation import vllm_client

    if vllm_client.is_vllm_available():
        return vllm_client.VLLMClient(base_url=base_url, connection_timeout=connection_timeout)
    check = vllm_client.is_vllm_available
    vllm_client.is_vllm_available = lambda *args, **kwargs: True
    try:
        return vllm_client.VLLMClient(base_url=base_url, connection_timeout=connection_timeout)
    finally:
        vllm_client.is_vllm_available = check


def reload_weights(client, folder: str | Path) -> None:
    """Have the server load the checkpoint in `folder` into its running model, then drop what it cached
    with the old weights (image encodings, prefixes).

    Raises `WeightSyncError` with the server's answer when it refuses (e.g. started without
    `VLLM_SERVER_DEV_MODE=1`: no such route)."""
    response = client.session.post(f"{client.base_url}/collective_rpc",
                                   json={"method": "reload_weights", "kwargs": {"weights_path": str(folder)}})
    if response.status_code != 200:
        hint = " (start the server with VLLM_SERVER_DEV_MODE=1)" if response.status_code == 404 else ""
        raise WeightSyncError(f"grpo.vllm.weight_sync: the server at {client.base_url} did not reload {folder}: "
                              f"HTTP {response.status_code} {response.text[:300]}{hint}")
    response = client.session.post(f"{client.base_url}/reset_encoder_cache")
    if response.status_code != 200:
        raise WeightSyncError(f"grpo.vllm.weight_sync: the server at {client.base_url} did not reset its encoder cache: "
                              f"HTTP {response.status_code} {response.text[:300]}")
    client.reset_prefix_cache()


class DiskWeightSync:
    """Stands where TRL keeps its `VLLMGeneration` (`trainer.vllm_generation`): `sync_weights()` saves the
    policy to `directory/step-N` (every training process takes part: ZeRO-3 and FSDP gather their shards
    as for a checkpoint), the main process has the server reload it and deletes the previous folder, and
    every process waits until the server has the new weights. `vllm_client` is the main process's client,
    as TRL's is. The folder must be readable by the server at the same path (a shared file system when
    they run on different machines)."""

    def __init__(self, model: Callable[[], Any], accelerator, client, directory: str | Path) -> None:
        self.model = model  # the model as the accelerator wrapped it (a DeepSpeed engine under ZeRO-3), when asked
        self.accelerator = accelerator
        self.vllm_client = client
        self.directory = Path(directory).resolve()
        self.syncs = 0
        self._previous: Path | None = None

    def sync_weights(self) -> None:
        model = self.model()
        state_dict: dict[str, Any] = self.accelerator.get_state_dict(model)
        if self.accelerator.is_main_process:
            folder = self.directory / f"step-{self.syncs}"
            shutil.rmtree(folder, ignore_errors=True)
            self.accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
            reload_weights(self.vllm_client, folder)
            if self._previous is not None:
                shutil.rmtree(self._previous, ignore_errors=True)
            self._previous = folder
            logger.debug("vLLM server reloaded the policy from %s", folder)
        self.syncs += 1
        self.accelerator.wait_for_everyone()  # no process samples before the server has the new weights

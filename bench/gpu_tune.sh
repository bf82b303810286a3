#!/bin/bash
# The device run of bench/gpu_tune.py: `raynlp tune` with two trials sharing the GPU (half a
# GPU each), ASHA over 4 learning rates, MiniLM in bf16 (.gpu/minilm-bf16).
#
# The device machine has no Ray and no network, and the Ray wheel (79 MB) is over what one call
# may carry (64 MiB), so it travels in two halves over three calls on the same warm machine
# (a call's carried folders do not outlast it: call 1 stashes its half in /root/stash):
#   split -b 40M -d ray-2.60.0-cp312-*.whl .whl1/ray.part; mv .whl1/ray.part01 .whl2/
#   (.whl1 also holds jsonschema, jsonschema_specifications, referencing, rpds_py, tensorboardx)
#   run(carry [".whl1", ".whl"]):                     bash bench/gpu_tune.sh stash
#   run(carry [".whl2"]):                             bash bench/gpu_tune.sh install
#   run(carry [".gpu/minilm-bf16", ".gpu/wheels"]):   bash bench/gpu_tune.sh
# (DIAGNOSE=S prints free resources and placement groups every S seconds.)
# .whl holds deepspeed + pydantic wheels, .gpu/wheels seqeval/rouge-score/nltk/absl/click (as in
# bench/gpu_summarization.sh).
set -uo pipefail
case "${1:-run}" in
  stash)  # call 1: keep the first half and the small wheels outside the (replaced) work tree
    mkdir -p /root/stash && cp -r .whl1 .whl /root/stash/ && exit 0 ;;
  install)  # call 2: join the halves, install Ray and the wheels
    cat /root/stash/.whl1/ray.part00 .whl2/ray.part01 \
      > /tmp/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl || exit 3
    python -m pip install --no-deps --quiet /tmp/ray-2.60.0-*.whl /root/stash/.whl1/*.whl \
      /root/stash/.whl/*.whl 2>&1 | grep -v -i warn | tail -3
    python -c "import ray, deepspeed; print('ray', ray.__version__, 'deepspeed', deepspeed.__version__)"
    exit $? ;;
esac
python -c "import ray" || exit 3
python -m pip install --no-deps --quiet .gpu/wheels/*.whl 2>&1 | grep -v -i warn | tail -3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export RAY_AUTH_MODE=disabled
PYTHONPATH=src timeout "${TUNE_TIMEOUT:-420}" python bench/gpu_tune.py --base .gpu/minilm-bf16 \
  --trials "${TRIALS:-4}" --epochs "${EPOCHS:-3}" --out "${OUT:-/tmp}/gpu_tune.json" \
  --diagnose-after "${DIAGNOSE:-0}" > /tmp/gpu_tune.log 2>&1
grep -v -i "warn" /tmp/gpu_tune.log | grep -E '^\[gpu_tune\]|^\[raynlp\] (tune|epoch .* done)|^\{|^ |^\}|wrote|Error|error|Requesting|Attempting' | head -60
[ -n "${OUT:-}" ] && cp /tmp/gpu_tune.log "$OUT/" && cp /tmp/ray/session_latest/logs/raylet.out "$OUT/" 2>/dev/null
exit 0

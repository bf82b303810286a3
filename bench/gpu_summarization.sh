#!/bin/bash
# The device run of bench/gpu_summarization.py (run() with carry [".whl", ".gpu"]).
# The device machine has no network: .whl holds deepspeed + pydantic wheels, .gpu/wheels
# seqeval/rouge-score/nltk/absl/click, .gpu/minilm-bf16 the MiniLM weights in bf16 (the fp32
# file is over the carry limit), .gpu/xsum the XSum rows from ../shared/data/xsum.
set -euo pipefail
python -m pip install --no-deps --quiet .whl/*.whl .gpu/wheels/*.whl 2>&1 | grep -v -i warn | tail -3 || true
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONPATH=src python bench/gpu_summarization.py --base .gpu/minilm-bf16 \
  --train .gpu/xsum/train.jsonl --validation .gpu/xsum/validation.jsonl \
  --epochs "${EPOCHS:-6}" --out "${OUT:-/tmp}/gpu_summarization.json" 2>&1 | grep -v -i "warn" | tail -60

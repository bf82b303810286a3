#!/bin/bash
# The device run of bench/gpu_task.py (run() with carry [".whl", ".gpu"]): CoNLL-2003 NER, then
# STS-B, with the packaged MiniLM (bf16 copy in .gpu/minilm-bf16; data copied from
# ../shared/data into .gpu/conll and .gpu/stsb). Wheels as in bench/gpu_summarization.sh.
set -uo pipefail
python -m pip install --no-deps --quiet .whl/*.whl .gpu/wheels/*.whl 2>&1 | grep -v -i warn | tail -3
OUT="${OUT:-/tmp}"
PYTHONPATH=src python bench/gpu_task.py --task ner --base .gpu/minilm-bf16 \
  --train .gpu/conll/train.txt --validation .gpu/conll/validation.txt \
  --epochs "${NER_EPOCHS:-3}" --out "$OUT/gpu_ner.json" 2>&1 | grep '^{"epoch"\|wrote\|Error\|error' | tail -8
PYTHONPATH=src python bench/gpu_task.py --task similarity --base .gpu/minilm-bf16 \
  --train .gpu/stsb/train.tsv --validation .gpu/stsb/dev.tsv \
  --epochs "${STS_EPOCHS:-4}" --out "$OUT/gpu_similarity.json" 2>&1 | grep '^{"epoch"\|wrote\|Error\|error' | tail -8

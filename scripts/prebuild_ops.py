"""Build DeepSpeed's shared-memory comm op once at install time (it is JIT-compiled, 40-115 s).

DeepSpeed builds it on first use in every fresh environment; doing it during `make install`
keeps that cost out of the first training run. Cached under $TORCH_EXTENSIONS_DIR.
"""

import time

from deepspeed.accelerator import get_accelerator

if get_accelerator().device_name() == "cpu":
    started = time.perf_counter()
    get_accelerator().create_op_builder("ShareMemCommBuilder").load(verbose=False)
    print(f"DeepSpeed shm comm op ready ({time.perf_counter() - started:.0f}s)")

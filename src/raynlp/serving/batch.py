"""Offline batch prediction over a JSONL file with Ray Data: ``raynlp predict --input --output``.

Input: one item per line: a JSON object of the model's request kind (``{"text"}``,
``{"text", "text_pair"}`` or ``{"question", "context"}``; other keys, e.g. an ``id``, are
carried to the output), a JSON string, or plain text (both mean ``{"text": ...}``). Blank
lines are skipped. Output: one JSON object per input item, in input order: the item merged
with its answer, as ``raynlp predict --model`` prints it.

Bad lines fail the whole run before any inference: :func:`check_input_file` reads the file once
on the driver and raises :class:`InputFileError` naming every bad line (``line N: ...``), so a
long job never dies half-way on line 900,000 and never writes a partial output.

Pipeline: the check notes where every 16th item starts → blocks are byte ranges of the file
(a few batches each, enough for 4 blocks an actor) → one zero-CPU task on the driver's node
reads them into numbered lines → an actor pool (each actor loads :class:`OnnxPredictor` once
from the exported folder: no pickled models) → answers stream back to the driver in input
order (``preserve_order``) → ``<output>.partial``, renamed to the output at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raynlp.serving.schemas import text_problem

REQUEST_FIELDS = {"text": ("text",), "pair": ("text", "text_pair"), "qa": ("question", "context")}
"""The fields each request kind needs (see raynlp.serving.schemas)."""

NODE_ID_LABEL = "ray.io/node-id"
"""Ray's default node label holding the node id (for pinning work to the driver's node)."""

GRANULE_ITEMS = 16
"""The input check notes where every 16th item starts; blocks are whole granules."""

MAX_REPORTED_LINES = 10
"""Bad lines named in an InputFileError; the rest are counted."""


class InputFileError(ValueError):
    """The input file cannot be predicted as it is; the message names the bad lines."""


class LineError(ValueError):
    """One line's problem (without the line number)."""


@dataclass(frozen=True)
class InputCheck:
    """What :func:`check_input_file` found in a valid input file, and where its items start
    (every ``GRANULE_ITEMS``-th item's byte offset and line number: read tasks seek there)."""

    items: int
    blank_lines: int
    size_bytes: int
    granule_offsets: list[int]
    granule_lines: list[int]


def _kind_example(kind: str) -> str:
    return "{" + ", ".join(f'"{name}": ...' for name in REQUEST_FIELDS[kind]) + "}"


def parse_line(line: str, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(output item, request item) of one non-blank line; raises :class:`LineError`.

    A line starting with ``{`` must be a JSON object; a JSON string or any other line is
    plain text, which only ``text`` models take.
    """
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise LineError(f"not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(item, dict):
            raise LineError("not valid JSON (expected an object)")
    else:
        try:
            text = json.loads(stripped)
        except json.JSONDecodeError:
            text = line
        item = {"text": text if isinstance(text, str) else line}
        if kind != "text":
            raise LineError(f"this model needs a JSON object {_kind_example(kind)}, not plain text")
    request = {}
    for name in REQUEST_FIELDS[kind]:
        if name not in item:
            raise LineError(f'missing "{name}" (this model needs {_kind_example(kind)})')
        value = item[name]
        if not isinstance(value, str):
            raise LineError(f'"{name}" must be a string, not {type(value).__name__}')
        problem = text_problem(value, sys.maxsize)
        if problem:
            raise LineError(f'"{name}" {problem}')
        request[name] = value
    return item, request


def decode_line(raw: bytes, number: int) -> str:
    """A line's text without its line break (and without a UTF-8 BOM on line 1)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LineError(f"not UTF-8 (byte {raw[err.start]:#04x} at byte {err.start + 1})") from None
    text = text.removesuffix("\n").removesuffix("\r")
    return text.removeprefix("\ufeff") if number == 1 else text


def request_kind_of(model_dir: str | Path) -> str:
    """The request kind of an exported folder, read from its raynlp.json (no model loaded)."""
    from raynlp.tasks import get_task
    from raynlp.training.checkpoints import read_model_meta

    return get_task(read_model_meta(model_dir)["task"]).request_kind


def check_input_file(input_path: str | Path, kind: str) -> InputCheck:
    """Check every line of ``input_path`` for a model of request ``kind``; raise
    :class:`InputFileError` naming the bad lines. Lines end at ``\\n`` only (U+2028 and the
    other breaks of ``str.splitlines`` are valid inside JSON strings)."""
    path = Path(input_path)
    if not path.is_file():
        raise InputFileError(f"input file {path} does not exist (or is not a file)")
    items = blank = bad = offset = 0
    offsets: list[int] = []
    lines: list[int] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            try:
                line = decode_line(raw, number)
                if not line.strip():
                    blank += 1
                    continue
                parse_line(line, kind)
            except LineError as err:
                bad += 1
                if len(problems) < MAX_REPORTED_LINES:
                    problems.append(f"line {number}: {err}")
                continue
            if items % GRANULE_ITEMS == 0:
                offsets.append(start)
                lines.append(number)
            items += 1
    if bad:
        more = f"; ... and {bad - len(problems)} more bad lines" if bad > len(problems) else ""
        raise InputFileError(f"{path}: {'; '.join(problems)}{more}")
    if not items:
        raise InputFileError(f"{path} holds no input lines")
    return InputCheck(items, blank, offset, offsets, lines)


def plan_blocks(check: InputCheck, rows_per_block: int) -> list[dict[str, int]]:
    """Byte ranges of about ``rows_per_block`` items each, in file order."""
    step = max(1, -(-rows_per_block // GRANULE_ITEMS))
    starts = list(range(0, len(check.granule_offsets), step))
    ends = [check.granule_offsets[i] for i in starts[1:]] + [check.size_bytes]
    return [
        {"start": check.granule_offsets[i], "end": end, "first_line": check.granule_lines[i]}
        for i, end in zip(starts, ends, strict=True)
    ]


def block_rows(items: int, actors: int, batch_size: int) -> int:
    """Enough blocks to keep every actor busy (4 each), few enough to keep per-task overhead
    small (up to 8 batches a block)."""
    return min(max(-(-items // (4 * actors)), batch_size), 8 * batch_size)


def default_concurrency(num_cpus_per_actor: float) -> int:
    """Actors that fit the cluster's CPUs now (at least 1)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, int(cpus // max(num_cpus_per_actor, 1e-9)))


def read_lines(blocks: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """Byte ranges of ``path`` (from :func:`plan_blocks`) → its non-blank lines, numbered."""
    numbers, lines = [], []
    with open(path, "rb") as handle:
        for start, end, first in zip(
            blocks["start"], blocks["end"], blocks["first_line"], strict=True
        ):
            handle.seek(int(start))
            for number, raw in enumerate(handle.read(int(end - start)).split(b"\n"), int(first)):
                line = decode_line(raw, number)
                if line.strip():
                    numbers.append(number)
                    lines.append(line)
    return {
        "line_number": np.asarray(numbers, dtype=np.int64),
        "line": np.asarray(lines, dtype=object),
    }


class LinePredictor:
    """Ray Data actor: loads the exported model once; maps a batch of lines → output JSON lines."""

    def __init__(self, model_dir: str, intra_op_threads: int) -> None:
        from raynlp.serving.predictor import OnnxPredictor

        self.predictor = OnnxPredictor(model_dir, intra_op_threads)
        self.kind = self.predictor.request_kind

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items, requests = [], []
        for number, line in zip(batch["line_number"], batch["line"], strict=True):
            try:
                item, request = parse_line(str(line), self.kind)
            except LineError as err:  # the file changed after check_input_file
                raise InputFileError(f"line {number}: {err}") from None
            items.append(item)
            requests.append(request)
        answers = self.predictor.predict(requests) if requests else []
        out = [json.dumps({**item, **answer}) for item, answer in zip(items, answers, strict=True)]
        return {"output": np.asarray(out, dtype=object)}


@contextlib.contextmanager
def _partial_file(output_path: Path) -> Iterator[Any]:
    """Write to ``<output>.partial`` and rename on success, so a failed run leaves no output."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            yield handle
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _ray_data_progress(ds: Any, enabled: bool) -> Iterator[None]:
    """Ray Data's progress for this run. Its bars read the process-wide DataContext, not the
    dataset's, so both are switched on (and the process-wide flag restored afterwards)."""
    import ray

    if not enabled:
        yield
        return
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = ds.context.enable_progress_bars = True
    try:
        yield
    finally:
        context.enable_progress_bars = before


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = 64,
    concurrency: int | None = None,
    intra_op_threads: int = 1,
    checked: InputCheck | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict every line of ``input_path`` into ``output_path`` (same order) on the running Ray
    cluster; return a summary (rows, seconds, rows_per_s, concurrency, ...).

    ``concurrency`` actors (default: the cluster's CPUs // ``intra_op_threads``, at most one
    per block) of ``intra_op_threads`` CPUs each. ``checked``: the result of
    :func:`check_input_file` when the caller already checked the file (the CLI does, before
    starting Ray); otherwise it is checked here. ``progress``: Ray Data's progress (bars on a
    terminal, periodic log lines otherwise) even where $RAY_DATA_DISABLE_PROGRESS_BARS is set
    (the CLI sets it for every verb). The input file must be readable on the driver's node, the
    model folder on every node.
    """
    import ray

    started = time.perf_counter()
    model_dir, input_path, output_path = Path(model_dir), Path(input_path), Path(output_path)
    if batch_size < 1 or intra_op_threads < 1 or (concurrency is not None and concurrency < 1):
        raise ValueError("batch_size, concurrency and intra_op_threads must be >= 1")
    if input_path.resolve() == output_path.resolve():
        raise ValueError(f"the output file {output_path} is the input file")
    checked = checked or check_input_file(input_path, request_kind_of(model_dir))
    wanted = concurrency or default_concurrency(intra_op_threads)

    # Tiny descriptors, one block each; the reading runs on the driver's node, where the
    # file is (as Ray does for local:// paths), one task at a time and with no CPU reserved:
    # the actors may hold every CPU, and a 1-CPU task (a read, a repartition) would never start.
    blocks = plan_blocks(checked, block_rows(checked.items, wanted, batch_size))
    actors = min(wanted, len(blocks))
    ds = ray.data.from_items(blocks, override_num_blocks=len(blocks))
    ds = ds.map_batches(
        read_lines,
        fn_kwargs={"path": str(input_path.resolve())},
        batch_size=None,
        compute=ray.data.TaskPoolStrategy(size=1),
        num_cpus=0,
        label_selector={NODE_ID_LABEL: ray.get_runtime_context().get_node_id()},
    )
    ds = ds.map_batches(
        LinePredictor,
        fn_constructor_args=(str(model_dir.resolve()), intra_op_threads),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=intra_op_threads,
    )
    ds.context.execution_options.preserve_order = True

    done, first_answers_s = 0, None
    with _partial_file(output_path) as handle, _ray_data_progress(ds, progress):
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            lines = batch["output"]
            handle.write("".join(f"{line}\n" for line in lines))
            done += len(lines)
            first_answers_s = first_answers_s or time.perf_counter() - started
        if done != checked.items:  # before the rename: no output rather than a wrong one
            raise InputFileError(
                f"{input_path} changed while predicting: {done} answers for {checked.items} items"
            )
    seconds = time.perf_counter() - started
    return {
        "rows": done,
        "blank_lines_skipped": checked.blank_lines,
        "seconds": round(seconds, 3),
        "first_answers_s": round(first_answers_s or seconds, 3),
        "rows_per_s": round(done / seconds, 1) if seconds else None,
        "concurrency": actors,
        "batch_size": batch_size,
        "intra_op_threads": intra_op_threads,
        "output": str(output_path),
    }


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: rows, seconds, rows/s (start-up included: actors load the
    model before the first answers)."""
    return (
        f"predicted {summary['rows']} rows in {summary['seconds']:.1f} s "
        f"({summary['rows_per_s']} rows/s, {summary['concurrency']} actors, "
        f"first answers after {summary['first_answers_s']:.1f} s) "
        f"→ {summary['output']}"
    )

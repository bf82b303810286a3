"""Rebuild the small samples shipped in src/raynlp/data/samples (see the README.md there).

    python scripts/make_samples.py [DATA_ROOT]

DATA_ROOT is the shared real-data folder (default: ../shared/data next to this repository); an
older call naming its sst2/ folder still works. Every sample is drawn with its own fixed seed, so
a rerun writes the same files:

- sst2_*.tsv: random rows (seed 0) of GLUE SST-2 train (phrases of 4+ words) and dev.
- ner_*.conll: raynlp's own generated sentences (scripts/ner_sample.py, seed 0); no corpus text.
- squad_*.json: whole random paragraphs, with all their questions, of SQuAD v1.1 (seed 1).
- stsb_*.tsv: random rows of GLUE STS-B train and dev, columns sentence1, sentence2, score (seed 2).
- xsum_*.jsonl: random rows of XSum (seed 3), documents cut at a line end to ~1,200 characters.
"""

from __future__ import annotations

import csv
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ner_sample import make_ner_sentences, write_conll

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "raynlp" / "data" / "samples"
DEFAULT_DATA = ROOT.parent / "shared" / "data"

NER_SENTENCES = (500, 120)
SQUAD_QUESTIONS = (350, 120)
STSB_ROWS = (1000, 250)
XSUM_ROWS = (80, 25)
XSUM_MAX_CHARS = 1200


# --- SST-2 ------------------------------------------------------------------------------------


def read_tsv(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(row[0].strip(), row[1]) for row in reader]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        handle.write("sentence\tlabel\n")
        for sentence, label in rows:
            handle.write(f"{sentence}\t{label}\n")


def make_sst2(source: Path) -> None:
    rng = random.Random(0)
    train = [row for row in read_tsv(source / "train.tsv") if len(row[0].split()) >= 4]
    dev = read_tsv(source / "dev.tsv")
    write_tsv(SAMPLES / "sst2_train.tsv", rng.sample(train, 2000))
    write_tsv(SAMPLES / "sst2_validation.tsv", rng.sample(dev, 400))


# --- NER (generated) --------------------------------------------------------------------------


def make_ner() -> None:
    train, validation = make_ner_sentences(*NER_SENTENCES, seed=0)
    write_conll(SAMPLES / "ner_train.conll", train)
    write_conll(SAMPLES / "ner_validation.conll", validation)


# --- SQuAD v1.1 -------------------------------------------------------------------------------


def squad_subset(source: Path, n_questions: int, rng: random.Random) -> dict[str, Any]:
    """Whole random paragraphs (all their questions) until ``n_questions``, in source order."""
    data = json.loads(source.read_text(encoding="utf-8"))
    paragraphs = [
        (a, p) for a, article in enumerate(data["data"]) for p in range(len(article["paragraphs"]))
    ]
    rng.shuffle(paragraphs)
    picked: list[tuple[int, int]] = []
    total = 0
    for a, p in paragraphs:
        if total >= n_questions:
            break
        count = len(data["data"][a]["paragraphs"][p]["qas"])
        if total + count > n_questions + 5:  # stay close to the target
            continue
        picked.append((a, p))
        total += count
    articles = []
    for a, article in enumerate(data["data"]):
        chosen = [article["paragraphs"][p] for p in sorted(p for aa, p in picked if aa == a)]
        if chosen:
            articles.append({"title": article["title"], "paragraphs": chosen})
    return {"version": data.get("version", "1.1"), "data": articles}


def make_squad(source: Path) -> None:
    rng = random.Random(1)
    for split, name, n in (
        ("train", "train.json", SQUAD_QUESTIONS[0]),
        ("validation", "validation.json", SQUAD_QUESTIONS[1]),
    ):
        subset = squad_subset(source / name, n, rng)
        text = json.dumps(subset, ensure_ascii=False, separators=(",", ":"))
        (SAMPLES / f"squad_{split}.json").write_text(text + "\n", encoding="utf-8")


# --- STS-B ------------------------------------------------------------------------------------


def read_stsb(path: Path) -> list[tuple[str, str, str]]:
    """GLUE STS-B TSV (10 columns; quote characters are text, not quoting)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    s1, s2, score = header.index("sentence1"), header.index("sentence2"), header.index("score")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{number}: {len(fields)} columns, expected {len(header)}")
        rows.append((fields[s1], fields[s2], fields[score]))
    return rows


def write_stsb(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("sentence1\tsentence2\tscore\n")
        for row in rows:
            if any(ch in field for field in row for ch in "\t\r\n"):
                raise ValueError(f"a tab or line break inside an STS-B row: {row!r}")
            handle.write("\t".join(row) + "\n")


def make_stsb(source: Path) -> None:
    rng = random.Random(2)
    write_stsb(
        SAMPLES / "stsb_train.tsv", rng.sample(read_stsb(source / "train.tsv"), STSB_ROWS[0])
    )
    write_stsb(
        SAMPLES / "stsb_validation.tsv", rng.sample(read_stsb(source / "dev.tsv"), STSB_ROWS[1])
    )


# --- XSum -------------------------------------------------------------------------------------

_SENTENCE_FINAL = (".", "!", "?", '"', "'", ")")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def cut_document(document: str, max_chars: int = XSUM_MAX_CHARS) -> str:
    """The leading lines (XSum has one sentence or paragraph a line) that fit in ``max_chars``,
    ending with a line that ends a sentence; if even the first line is longer, it is cut after
    its last sentence end that fits."""
    kept: list[str] = []
    size = 0
    for line in document.split("\n"):
        extra = len(line) + (1 if kept else 0)
        if size + extra > max_chars:
            break
        kept.append(line)
        size += extra
    while len(kept) > 1 and not kept[-1].rstrip().endswith(_SENTENCE_FINAL):
        kept.pop()  # no dangling heading or speaker line at the end
    if kept:
        return "\n".join(kept).strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(document[: max_chars + 1])]
    return document[: ends[-1]].strip() if ends else document[:max_chars].strip()


def make_xsum(source: Path) -> None:
    rng = random.Random(3)
    for split, n in (("train", XSUM_ROWS[0]), ("validation", XSUM_ROWS[1])):
        lines = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        with (SAMPLES / f"xsum_{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rng.sample(rows, n):
                out = {
                    "document": cut_document(row["document"]),
                    "summary": row["summary"],
                    "id": str(row["id"]),
                }
                handle.write(json.dumps(out, ensure_ascii=False) + "\n")


def main(data_root: str | None = None) -> None:
    root = Path(data_root) if data_root else DEFAULT_DATA
    if (root / "train.tsv").is_file() and root.name == "sst2":  # the old call: .../sst2
        root = root.parent
    make_sst2(root / "sst2")
    make_ner()
    make_squad(root / "squad_v1.1")
    make_stsb(root / "stsb")
    make_xsum(root / "xsum")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

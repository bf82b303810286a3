"""Rebuild the small SST-2 sample shipped in src/raynlp/data/samples from ../shared/data/sst2.

    python scripts/make_samples.py ../shared/data/sst2

Rows are drawn at random (seed 0) from GLUE SST-2 train (phrases of 4+ words) and dev.
"""

import csv
import random
import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "raynlp" / "data" / "samples"


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


def main(source: str) -> None:
    rng = random.Random(0)
    train = [row for row in read_tsv(Path(source) / "train.tsv") if len(row[0].split()) >= 4]
    dev = read_tsv(Path(source) / "dev.tsv")
    write_tsv(SAMPLES / "sst2_train.tsv", rng.sample(train, 2000))
    write_tsv(SAMPLES / "sst2_validation.tsv", rng.sample(dev, 400))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sst2")

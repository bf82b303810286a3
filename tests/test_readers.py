"""The CoNLL and SQuAD readers, and the shipped NER, SQuAD, STS-B and XSum samples."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from raynlp.data.paths import available_samples
from raynlp.data.readers import read_conll, read_rows, read_squad

# --- CoNLL ------------------------------------------------------------------------------------

CONLL_4_COLUMNS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_conll_four_columns_token_first_tag_last(tmp_path: Path):
    path = tmp_path / "eng.conll"
    path.write_text(CONLL_4_COLUMNS)
    assert read_rows(str(path)) == [
        {
            "tokens": ["EU", "rejects", "German", "call", "."],
            "ner_tags": ["B-ORG", "O", "B-MISC", "O", "O"],
        },
        {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]},
        {"tokens": ["BRUSSELS", "1996-08-22"], "ner_tags": ["B-LOC", "O"]},
    ]


def test_conll_two_columns_tabs_spaces_and_blank_lines(tmp_path: Path):
    # leading blank lines, several blank lines (one with spaces) between sentences, tabs and
    # runs of spaces between columns, Windows line ends, no blank line after the last sentence
    text = (
        "\n\nNew\tB-LOC\r\nYork   I-LOC\r\nis O\r\n\r\n\n   \n\t\n"
        "Ana B-PER\nsaid \t O\n\n\n"
        "Hi O\nthere O"
    )
    path = tmp_path / "tiny.iob"
    path.write_text(text, newline="")
    assert read_rows(str(path)) == [
        {"tokens": ["New", "York", "is"], "ner_tags": ["B-LOC", "I-LOC", "O"]},
        {"tokens": ["Ana", "said"], "ner_tags": ["B-PER", "O"]},
        {"tokens": ["Hi", "there"], "ner_tags": ["O", "O"]},
    ]


def test_conll_docstart_without_blank_line_ends_the_sentence(tmp_path: Path):
    path = tmp_path / "d.conll"
    path.write_text("a O\n-DOCSTART- O\nb B-ORG\n")
    assert read_conll(path) == [
        {"tokens": ["a"], "ner_tags": ["O"]},
        {"tokens": ["b"], "ner_tags": ["B-ORG"]},
    ]


def test_conll_single_column_line_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.conll"
    path.write_text("Paris B-LOC\n\nLondon B-LOC\nBerlin\n")
    with pytest.raises(ValueError, match=r"bad\.conll: line 4: .*'Berlin'"):
        read_rows(str(path))


def test_conll_suffixes_gzip_and_declared_format(tmp_path: Path):
    expected = [{"tokens": ["Oslo"], "ner_tags": ["B-LOC"]}]
    for name in ("a.conll", "b.iob", "c.txt"):
        (tmp_path / name).write_text("Oslo B-LOC\n")
        assert read_rows(str(tmp_path / name)) == expected
    with gzip.open(tmp_path / "d.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("Oslo B-LOC\n")
    assert read_rows(str(tmp_path / "d.txt.gz")) == expected
    (tmp_path / "e.dat").write_text("Oslo B-LOC\n")
    assert read_rows(str(tmp_path / "e.dat"), "conll") == expected
    with pytest.raises(ValueError, match="conll, squad"):
        read_rows(str(tmp_path / "e.dat"))


# --- SQuAD ------------------------------------------------------------------------------------


def _squad(answer_start: int = 11) -> dict:
    context_a = "The cat is on the mat."
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Cats",
                "paragraphs": [
                    {
                        "context": context_a,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Where is the cat?",
                                "answers": [
                                    {"text": "on the mat", "answer_start": answer_start},
                                    {"text": "the mat", "answer_start": 14},
                                    {"text": "on the mat", "answer_start": 11},
                                ],
                            },
                            {
                                "id": "q2",
                                "question": "What is on the mat?",
                                "answers": [{"text": "The cat", "answer_start": 0}],
                            },
                        ],
                    }
                ],
            },
            {
                "title": "Dogs",
                "paragraphs": [
                    {"context": "No questions here.", "qas": []},
                    {
                        "context": "Dogs bark.",
                        "qas": [
                            {
                                "id": "q3",
                                "question": "What do dogs do?",
                                "answers": [{"text": "bark", "answer_start": 5}],
                            }
                        ],
                    },
                ],
            },
        ],
    }


def test_squad_one_row_per_question_with_all_answers(tmp_path: Path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(_squad()))
    rows = read_rows(str(path))
    assert rows == [
        {
            "id": "q1",
            "title": "Cats",
            "question": "Where is the cat?",
            "context": "The cat is on the mat.",
            "answers": {
                "text": ["on the mat", "the mat", "on the mat"],
                "answer_start": [11, 14, 11],
            },
        },
        {
            "id": "q2",
            "title": "Cats",
            "question": "What is on the mat?",
            "context": "The cat is on the mat.",
            "answers": {"text": ["The cat"], "answer_start": [0]},
        },
        {
            "id": "q3",
            "title": "Dogs",
            "question": "What do dogs do?",
            "context": "Dogs bark.",
            "answers": {"text": ["bark"], "answer_start": [5]},
        },
    ]
    assert read_squad(path) == rows
    assert read_rows(str(path), "squad") == rows
    assert read_rows(str(path), "json") == rows


def test_squad_answer_not_at_its_start_names_the_question(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_squad(answer_start=12)))
    with pytest.raises(
        ValueError, match=r"question 'q1': answer 'on the mat' is not at answer_start 12"
    ):
        read_rows(str(path))


def test_plain_json_and_jsonl_with_list_values_still_read(tmp_path: Path):
    records = [
        {"tokens": ["Rome", "is", "old"], "ner_tags": ["B-LOC", "O", "O"]},
        {"tokens": [], "ner_tags": []},
    ]
    (tmp_path / "r.json").write_text(json.dumps(records))
    (tmp_path / "w.json").write_text(json.dumps({"data": records}))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    for name in ("r.json", "w.json", "r.jsonl"):
        assert read_rows(str(tmp_path / name)) == records
    (tmp_path / "notsquad.json").write_text(json.dumps({"data": [{"title": "x"}]}))
    assert read_rows(str(tmp_path / "notsquad.json")) == [{"title": "x"}]
    with pytest.raises(ValueError, match="not SQuAD JSON"):
        read_rows(str(tmp_path / "notsquad.json"), "squad")


# --- shipped samples --------------------------------------------------------------------------


def _entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each entity; asserts the tags are valid IOB2 on the way."""
    found: list[tuple[str, list[str]]] = []
    previous = "O"
    for token, tag in zip(tokens, tags, strict=True):
        assert tag == "O" or tag[:2] in ("B-", "I-"), tag
        assert tag[2:] in ("", "PER", "ORG", "LOC", "MISC"), tag
        if tag.startswith("I-"):
            assert previous != "O" and previous[2:] == tag[2:], (tokens, tags)
            found[-1][1].append(token)
        elif tag.startswith("B-"):
            found.append((tag[2:], [token]))
        previous = tag
    return [(kind, " ".join(words)) for kind, words in found]


def test_ner_sample_is_valid_iob2_with_all_types_and_unseen_entities():
    train = read_rows("sample://ner_train.conll")
    validation = read_rows("sample://ner_validation.conll")
    assert (len(train), len(validation)) == (500, 120)
    entities: dict[str, set[tuple[str, str]]] = {}
    for split, rows in (("train", train), ("validation", validation)):
        entities[split] = set()
        for row in rows:
            assert set(row) == {"tokens", "ner_tags"}
            assert row["tokens"] and len(row["tokens"]) == len(row["ner_tags"])
            entities[split].update(_entities(row["tokens"], row["ner_tags"]))
        assert {kind for kind, _ in entities[split]} == {"PER", "ORG", "LOC", "MISC"}
        assert {"B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"} <= {
            tag for row in rows for tag in row["ner_tags"]
        }
    unseen = entities["validation"] - entities["train"]
    assert 0.15 < len(unseen) / len(entities["validation"]) < 0.6
    # punctuation is tokenised on its own
    for row in train:
        for token in row["tokens"]:
            if any(c in token for c in ',.;:!?"()'):
                assert len(token) == 1 or token[0].isdigit(), token  # "1,200" and "3.5" are words


def test_squad_samples_answers_match_their_contexts():
    train = read_rows("sample://squad_train.json")
    validation = read_rows("sample://squad_validation.json")
    assert 330 <= len(train) <= 370 and 110 <= len(validation) <= 130
    for rows in (train, validation):
        assert len({row["id"] for row in rows}) == len(rows)
        for row in rows:
            assert set(row) == {"id", "title", "question", "context", "answers"}
            answers = row["answers"]
            assert answers["text"] and len(answers["text"]) == len(answers["answer_start"])
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                assert row["context"][start : start + len(text)] == text
    assert {row["title"] for row in train}.isdisjoint({row["title"] for row in validation})


def test_stsb_samples_keep_three_columns_and_quotes():
    train = read_rows("sample://stsb_train.tsv")
    validation = read_rows("sample://stsb_validation.tsv")
    assert (len(train), len(validation)) == (1000, 250)
    for row in train + validation:
        assert list(row) == ["sentence1", "sentence2", "score"]
        assert row["sentence1"] and row["sentence2"]
        assert 0.0 <= float(row["score"]) <= 5.0
    quoted = [r for r in train if '"' in r["sentence1"] + r["sentence2"]]
    assert quoted  # quote characters come back as text, not as CSV quoting


def test_xsum_samples_are_short_documents_with_summaries():
    train = read_rows("sample://xsum_train.jsonl")
    validation = read_rows("sample://xsum_validation.jsonl")
    assert (len(train), len(validation)) == (80, 25)
    for row in train + validation:
        assert set(row) == {"document", "summary", "id"}
        assert 200 < len(row["document"]) <= 1200
        assert row["summary"].strip() and isinstance(row["id"], str)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in validation})


def test_every_listed_sample_reads_and_the_readme_is_not_listed():
    names = available_samples()
    assert "README.md" not in names
    assert {
        "ner_train.conll",
        "squad_validation.json",
        "stsb_train.tsv",
        "xsum_validation.jsonl",
    } <= set(names)
    for name in names:
        assert read_rows(f"sample://{name}")


def test_iob2_check_rejects_a_dangling_inside_tag():
    with pytest.raises(AssertionError):
        _entities(["New", "York"], ["O", "I-LOC"])
    with pytest.raises(AssertionError):
        _entities(["New", "York"], ["B-ORG", "I-LOC"])

"""Hand-checked values for raynlp.metrics (seqeval, SQuAD v1.1, correlations, ROUGE, lead-n)."""

from __future__ import annotations

import json
import warnings

import pytest
from scipy import stats

from raynlp.metrics import (
    entity_metrics,
    exact_match_score,
    extract_entities,
    f1_score,
    lead_sentences,
    normalize_answer,
    regression_metrics,
    rouge_metrics,
    squad_metrics,
)

# ----------------------------------------------------------------------------- entities


def test_entity_metrics_hand_computed() -> None:
    # gold: PER[0:2], LOC[3:4] in sentence 0; ORG[0:1] in sentence 1  -> 3 entities
    # pred: PER[0:2] (correct), ORG[1:2] (wrong span)                 -> 2 entities, 1 correct
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG"]]
    m = entity_metrics(refs, preds)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    # F1 = 2 * (1/2 * 1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 0.4
    assert m["f1"] == pytest.approx(0.4)
    # tokens right: B-PER, I-PER, O of sentence 0 -> 3 of 6
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["num_examples"] == 2
    assert set(m["per_type"]) == {"PER", "LOC", "ORG"}
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["LOC"]["support"] == 1
    assert type(m["per_type"]["LOC"]["support"]) is int
    assert all(type(m[k]) is float for k in ("precision", "recall", "f1", "accuracy"))
    json.dumps(m)


def test_entity_support_counts_gold_entities_per_type() -> None:
    refs = [["B-PER", "O", "B-PER", "I-PER", "B-LOC"]]
    preds = [["B-PER", "O", "B-PER", "I-PER", "B-LOC"]]
    m = entity_metrics(refs, preds)
    assert m["per_type"]["PER"]["support"] == 2
    assert m["per_type"]["LOC"]["support"] == 1
    assert m["f1"] == 1.0
    assert m["accuracy"] == 1.0


def test_wrong_type_or_boundary_is_wrong() -> None:
    m = entity_metrics([["B-PER", "I-PER", "O"]], [["B-LOC", "I-LOC", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["per_type"]["PER"]["support"] == 1
    assert m["per_type"]["LOC"]["support"] == 0  # predicted-only type still listed
    m = entity_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert m["f1"] == 0.0


def test_default_mode_is_lenient_about_stray_i() -> None:
    # seqeval's default mode (conlleval): I-PER after O starts an entity, same as B-PER
    m = entity_metrics([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert m["f1"] == 1.0
    assert m["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("refs", "preds", "where"),
    [
        ([["O"], ["O"]], [["O"]], "2 reference sentences but 1"),
        ([["O"], ["O", "B-PER"]], [["O"], ["O"]], "sentence 1"),
    ],
)
def test_entity_length_mismatch_raises(refs, preds, where) -> None:
    with pytest.raises(ValueError, match=where):
        entity_metrics(refs, preds)


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER"], [("PER", 0, 1)]),
        (["B-LOC", "I-LOC", "I-LOC", "O", "B-MISC"], [("LOC", 0, 3), ("MISC", 4, 5)]),
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        (["B-PER", "I-PER", "B-PER"], [("PER", 0, 2), ("PER", 2, 3)]),
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
        (["B-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        (["I-ORG", "O", "I-ORG"], [("ORG", 0, 1), ("ORG", 2, 3)]),
        (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),
    ],
)
def test_extract_entities(tags, spans) -> None:
    assert extract_entities(tags) == spans


# ----------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("The Cat!", "cat"),
        ("  An   apple,  a day ", "apple day"),
        ("U.S.A.", "usa"),
        ("Theater in Athens", "theater in athens"),
    ],
)
def test_normalize_answer(raw, normal) -> None:
    assert normalize_answer(raw) == normal


def test_exact_match_and_f1() -> None:
    assert exact_match_score("The Cat!", "cat") is True
    assert exact_match_score("a cat", "cats") is False
    # "the big red dog" -> [big, red, dog]; "A red dog barked loudly" -> [red, dog, barked,
    # loudly]; common = {red, dog}: P = 2/3, R = 2/4, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    assert f1_score("the big red dog", "A red dog barked loudly") == pytest.approx(4 / 7)
    assert f1_score("dog dog", "dog") == pytest.approx(2 * 0.5 * 1 / 1.5)  # multiset counts
    assert f1_score("nothing", "something") == 0.0
    assert f1_score("the", "a") == 0.0  # both normalise to empty: 0 in v1.1


def test_squad_metrics_max_over_golds_and_mean() -> None:
    preds = ["The Cat!", "Denver Broncos", "nothing"]
    refs = [["dog", "cat"], ["Broncos", "Carolina Panthers"], ["something"]]
    m = squad_metrics(preds, refs)
    # q1: EM 1, F1 1; q2: EM 0, F1 max(2*(1/2)*1/(3/2), 0) = 2/3; q3: 0, 0
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["num_examples"] == 3
    assert squad_metrics(["Denver Broncos"], [["Broncos", "the Denver Broncos"]])["f1"] == 1.0


def test_squad_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        squad_metrics(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="question 0"):
        squad_metrics(["a"], [[]])
    with pytest.raises(ValueError, match="question 0"):
        squad_metrics(["a"], ["a"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- regression


def test_regression_perfect_and_anti_correlation() -> None:
    m = regression_metrics([1, 2, 3, 4], [2, 4, 6, 8])
    assert m["pearson"] == pytest.approx(1.0)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mse"] == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert m["mae"] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert m["num_examples"] == 4
    m = regression_metrics([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert m["pearson"] == pytest.approx(-1.0)
    assert m["spearman"] == pytest.approx(-1.0)
    json.dumps(m)


def test_spearman_with_ties() -> None:
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4] -> rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    m = regression_metrics(x, y)
    assert m["spearman"] == pytest.approx(0.9**0.5)
    assert m["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert m["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])


def test_constant_side_gives_zero_correlation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
        assert (m["pearson"], m["spearman"]) == (0.0, 0.0)
        assert m["mse"] == pytest.approx(2 / 3)
        m = regression_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
        assert (m["pearson"], m["spearman"]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        regression_metrics([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------- ROUGE


def test_rouge_identical_and_disjoint() -> None:
    m = rouge_metrics(["the quick brown fox"], ["the quick brown fox"])
    assert all(m[k] == pytest.approx(1.0) for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    m = rouge_metrics(["alpha beta"], ["gamma delta"])
    assert all(m[k] == 0.0 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    assert m["gen_len_words"] == 2.0 and m["num_examples"] == 1


def test_rouge1_uses_stemmer() -> None:
    # stemmed: pred [the, cat, are, run], ref [a, cat, run]; overlap {cat, run}
    # P = 2/4, R = 2/3 -> F = (2/3) / (7/6) = 4/7 (without stemming it would be 0)
    m = rouge_metrics(["The cats are running"], ["A cat runs"])
    assert m["rouge1"] == pytest.approx(4 / 7)
    assert m["rouge2"] == 0.0


def test_rouge2_and_mean_over_examples() -> None:
    # bigrams: pred {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat lay,
    # lay on, on the, the mat} -> 3 of 5 each side: F = 0.6; unigrams 5 of 6
    m = rouge_metrics(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert m["rouge2"] == pytest.approx(0.6)
    assert m["rouge1"] == pytest.approx(5 / 6)
    both = rouge_metrics(
        ["the cat sat on the mat", "alpha beta"], ["the cat lay on the mat", "gamma"]
    )
    assert both["rouge2"] == pytest.approx(0.3)
    assert both["gen_len_words"] == pytest.approx(4.0)


def test_rouge_lsum_splits_on_newlines() -> None:
    pred, ref = "gamma delta\nalpha beta", "alpha beta\ngamma delta"
    m = rouge_metrics([pred], [ref])
    assert m["rougeL"] == pytest.approx(0.5)  # LCS over the flat token list: 2 of 4
    assert m["rougeLsum"] == pytest.approx(1.0)  # sentence-level union LCS: 4 of 4


def test_rouge_rejects_empty_and_mismatch() -> None:
    with pytest.raises(ValueError):
        rouge_metrics([], [])
    with pytest.raises(ValueError):
        rouge_metrics(["a"], ["a", "b"])


# ----------------------------------------------------------------------------- lead-n

DOC = 'The cat sat on the mat. "Why?" asked the dog on version 2.5 of the rug! It rained all day.'


def test_lead_sentences() -> None:
    assert lead_sentences(DOC) == "The cat sat on the mat."
    assert lead_sentences(DOC, 2) == (
        'The cat sat on the mat. "Why?" asked the dog on version 2.5 of the rug!'
    )
    assert lead_sentences(DOC, 3) == DOC
    assert lead_sentences(DOC, 10) == DOC
    assert lead_sentences("  no sentence end here  ") == "no sentence end here"
    assert lead_sentences("e.g. lower case after a period. Next one.") == (
        "e.g. lower case after a period."
    )
    with pytest.raises(ValueError):
        lead_sentences(DOC, 0)

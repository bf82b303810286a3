"""Standard evaluation metrics for raynlp's five NLP tasks, matching the official scripts.

Token classification uses seqeval's entity-level scores in its default (conlleval-like,
lenient IOB2) mode, extractive QA uses the official SQuAD v1.1 exact-match/F1 with its
answer normalisation, regression (STS-B style) uses scipy's Pearson and Spearman
correlations plus MSE/MAE, and summarization uses Google's ``rouge-score`` package with
the Porter stemmer (the same settings as the Hugging Face summarization examples); a
lead-n helper provides the classic extractive baseline. Every function is pure and returns
a plain JSON-ready dict of python ``int``/``float`` values (ratios lie in [0, 1]).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from scipy import stats
from seqeval.metrics import accuracy_score as _seqeval_accuracy
from seqeval.metrics.sequence_labeling import get_entities as _seqeval_get_entities
from seqeval.metrics.sequence_labeling import (
    precision_recall_fscore_support as _seqeval_prfs,
)

ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# --------------------------------------------------------------------------- token classification


def extract_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, start, end_exclusive)`` of one IOB2 tag sequence.

    Uses seqeval's own chunker, so the rules are exactly those of its default mode: an
    ``I-X`` after ``O`` or after an entity of another type starts a new entity, and
    ``B-X B-X`` gives two adjacent entities.
    """
    return [(etype, start, end + 1) for etype, start, end in _seqeval_get_entities(list(tags))]


def _check_aligned(
    references: Sequence[Sequence[Any]], predictions: Sequence[Sequence[Any]]
) -> None:
    if len(references) != len(predictions):
        raise ValueError(
            f"{len(references)} reference sentences but {len(predictions)} predicted ones"
        )
    for i, (ref, pred) in enumerate(zip(references, predictions, strict=True)):
        if len(ref) != len(pred):
            raise ValueError(
                f"sentence {i}: {len(ref)} reference tags but {len(pred)} predicted tags"
            )


def entity_metrics(references: list[list[str]], predictions: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1, token accuracy and per-type scores (seqeval).

    An entity counts as correct only if its type and both boundaries match. Scores that
    would divide by zero (no predicted or no gold entities) are 0.0.
    """
    _check_aligned(references, predictions)
    refs = [list(r) for r in references]
    preds = [list(p) for p in predictions]
    precision, recall, f1, _ = _seqeval_prfs(refs, preds, average="micro", zero_division=0)
    types = sorted({etype for seq in (*refs, *preds) for etype, _, _ in _seqeval_get_entities(seq)})
    per_type: dict[str, dict[str, float | int]] = {}
    if types:
        p, r, f, s = _seqeval_prfs(refs, preds, average=None, zero_division=0)
        for i, name in enumerate(types):
            per_type[name] = {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
    n_tokens = sum(len(r) for r in refs)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(_seqeval_accuracy(refs, preds)) if n_tokens else 0.0,
        "per_type": per_type,
        "num_examples": len(refs),
    }


# --------------------------------------------------------------------------- extractive QA

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, truth: str) -> bool:
    """Whether the two answers are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(truth)


def f1_score(prediction: str, truth: str) -> float:
    """Bag-of-tokens F1 of the normalised answers (0.0 when nothing overlaps, as in v1.1)."""
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
    """Official SQuAD v1.1 scores: per question the best EM/F1 over its gold answers, averaged.

    ``exact_match`` and ``f1`` are fractions in [0, 1] (the official script prints x100).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    em = f1 = 0.0
    for i, (pred, golds) in enumerate(zip(predictions, references, strict=True)):
        if isinstance(golds, str) or not golds:
            raise ValueError(f"question {i}: references must be a non-empty list of answers")
        em += max(float(exact_match_score(pred, g)) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    n = len(predictions)
    return {"exact_match": em / n, "f1": f1 / n, "num_examples": n}


# --------------------------------------------------------------------------- regression


def _correlation(func: Any, x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # constant side: correlation undefined
        return 0.0
    return float(func(x, y)[0])


def regression_metrics(predictions: Sequence[float], references: Sequence[float]) -> dict[str, Any]:
    """Pearson and Spearman correlations (scipy.stats), MSE and MAE.

    Correlations lie in [-1, 1]. When either side is constant (including a single
    example) the correlation is undefined; it is reported as 0.0 rather than nan.
    """
    x = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(references, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{x.size} predictions but {y.size} references")
    if x.size == 0:
        raise ValueError("no predictions to score")
    diff = x - y
    return {
        "pearson": _correlation(stats.pearsonr, x, y),
        "spearman": _correlation(stats.spearmanr, x, y),
        "mse": float(np.mean(diff**2)),
        "mae": float(np.mean(np.abs(diff))),
        "num_examples": int(x.size),
    }


# --------------------------------------------------------------------------- summarization


def rouge_metrics(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L/Lsum F-measure (rouge-score, Porter stemmer) and mean words per prediction.

    ``rougeLsum`` splits texts into sentences on newlines only: join multi-sentence
    predictions and references with ``"\\n"`` before calling, otherwise it equals ``rougeL``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # rouge-score's order is (target, prediction)
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    n = len(predictions)
    result: dict[str, Any] = {key: float(total / n) for key, total in totals.items()}
    result["gen_len_words"] = float(sum(len(p.split()) for p in predictions) / n)
    result["num_examples"] = n
    return result


# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) when
# whitespace and then an uppercase letter or an opening quote follow.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]?(?=\s+[A-Z\"'“‘])")


def lead_sentences(document: str, n: int = 1) -> str:
    """The first ``n`` sentences of ``document`` (lead-n baseline), original spacing kept.

    A simple regex split (abbreviations such as "Mr. Smith" do split); when the text has
    ``n`` sentences or fewer, the whole stripped text is returned.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    text = document.strip()
    for i, match in enumerate(_SENTENCE_END.finditer(text), start=1):
        if i == n:
            return text[: match.end()]
    return text

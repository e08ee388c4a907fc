"""Entity-level (CoNLL) scores: spans read by conlleval's rules, checked by hand and against seqeval."""

import random

import pytest

from lmforge.evaluate.entities import entity_report, entity_spans, is_chunk_tagset


def test_spans_follow_conlleval_rules():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 1), ("LOC", 3, 3)}
    assert entity_spans(["I-PER", "I-PER", "O"]) == {("PER", 0, 1)}  # I- after O (or first) starts one
    assert entity_spans(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # a type change splits
    assert entity_spans(["B-PER", "B-PER"]) == {("PER", 0, 0), ("PER", 1, 1)}
    assert entity_spans(["B-ORG", "I-ORG", "E-ORG", "S-LOC", "O"]) == {("ORG", 0, 2), ("LOC", 3, 3)}  # IOBES
    assert entity_spans(["B-ORG", "L-ORG", "U-LOC"]) == {("ORG", 0, 1), ("LOC", 2, 2)}  # BILOU
    assert entity_spans(["O", "O"]) == set() and entity_spans([]) == set()


def test_report_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-PER"]]
    r = entity_report(gold, pred)
    # gold: PER(0-1), LOC, ORG = 3; predicted: PER(0-0), LOC, ORG, PER = 4; right: LOC and ORG = 2
    assert r["gold_entities"] == 3 and r["predicted_entities"] == 4
    assert r["micro"]["precision"] == pytest.approx(2 / 4) and r["micro"]["recall"] == pytest.approx(2 / 3)
    assert r["micro"]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_type"]["LOC"]["f1"] == 1.0 and r["macro"]["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="match"):
        entity_report([["O"]], [["O", "O"]])


def test_tagset_detection():
    assert is_chunk_tagset(["B-PER", "I-PER", "O"]) and is_chunk_tagset(["S-X", "O"])
    assert not is_chunk_tagset(["NOUN", "VERB"]) and not is_chunk_tagset(["O"]) and not is_chunk_tagset(["B-X", "NOUN"])


def test_same_scores_as_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in gold]
    r = entity_report(gold, pred)
    assert r["micro"]["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert r["micro"]["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
    assert r["micro"]["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    by_type = seqeval.classification_report(gold, pred, output_dict=True)
    for ty, s in r["per_type"].items():
        assert s["f1"] == pytest.approx(by_type[ty]["f1-score"]) and s["support"] == by_type[ty]["support"]

"""Names and addresses (data/pii.py, train/predict.py's entity_tagger, `anonymize --tagger`): the
words and BIO tags of generated sentences, a tagger fine-tuned by lmforge on them that finds names
and addresses in sentences it has not seen, span scores by hand, and bad input."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.data.anonymize import anonymize_text
from lmforge.data.pii import bio_tags, pii_sentences, words_with_offsets
from lmforge.evaluate.entities import span_report

pytest.importorskip("faker", reason="Faker is not installed (the data extra)")


def test_words_and_bio_tags_by_hand():
    text = "Dear Mary Ann Jones, it's at 12 Oak St."
    assert [w for w, _, _ in words_with_offsets(text)] == ["Dear", "Mary", "Ann", "Jones", ",", "it's", "at", "12",
                                                           "Oak", "St", "."]
    spans = [("person", 5, 19), ("address", 29, 38)]
    assert bio_tags(text, spans)[1] == ["O", "B-PERSON", "I-PERSON", "I-PERSON", "O", "O", "O", "B-ADDRESS",
                                        "I-ADDRESS", "I-ADDRESS", "O"]
    zh = "我叫张伟，住在北京市朝阳区。"
    words, tags = bio_tags(zh, [("person", 2, 4), ("address", 7, 13)])
    assert words[:4] == ["我", "叫", "张", "伟"] and tags[2:5] == ["B-PERSON", "I-PERSON", "O"]
    assert tags[7:13] == ["B-ADDRESS"] + ["I-ADDRESS"] * 5 and tags[13] == "O"
    assert [w for w, _, _ in words_with_offsets("电话13812345678，email a@b.cn")] == \
        ["电", "话", "13812345678", "，", "email", "a", "@", "b", ".", "cn"]


def test_generated_spans_hold_the_values():
    for lang, text, spans in pii_sentences(200, seed=3):
        assert spans and all(text[a:b].strip() == text[a:b] and b > a for _, a, b in spans)
        words, tags = bio_tags(text, spans)
        assert sum(t.startswith("B-") for t in tags) == len(spans)  # every span starts one entity
    train = {t for _, t, _ in pii_sentences(50, seed=1)}
    assert not train & {t for _, t, _ in pii_sentences(50, seed=1, held_out=True)}


def test_span_scores_by_hand():
    gold = {(0, "person", 0, 5), (0, "address", 10, 20), (1, "person", 3, 8)}
    pred = {(0, "person", 0, 5), (0, "address", 10, 19), (1, "person", 3, 8), (1, "address", 9, 12)}
    r = span_report(gold, pred)["per_type"]
    assert r["person"]["precision"] == 1 and r["person"]["recall"] == 1
    assert r["address"]["precision"] == 0 and r["address"]["recall"] == 0  # one character short is a miss


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A small BERT trained from scratch by lmforge on 3,000 generated sentences: a real tagger."""
    from lmforge.checkpoint import save_checkpoint
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.tokenizer import train_wordpiece

    tmp = tmp_path_factory.mktemp("pii")
    assert main(["data", "pii-examples", "--out", str(tmp / "pii.jsonl"), "--n", "3000"]) == 0
    rows = [json.loads(x) for x in (tmp / "pii.jsonl").read_text(encoding="utf-8").splitlines()]
    tok = train_wordpiece([" ".join(r["tokens"]) for r in rows], 2000)
    torch.manual_seed(0)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=96, n_layer=2, d_model=64,
                                   n_head=4, dropout=0.0)
    save_checkpoint(tmp / "base", build_model(cfg), tok)
    assert main(["finetune", str(tmp / "base"), "--task", "token", "--data", str(tmp / "pii.jsonl"), "--epochs", "8",
                 "--lr", "3e-3", "--batch-size", "32", "--metric", "entity_f1", "--out", str(tmp / "tagger")]) == 0
    return tmp / "tagger"


def test_the_tagger_finds_names_and_addresses_in_new_sentences(tagger):
    from lmforge.train.predict import entity_tagger

    tag = entity_tagger(tagger)
    sents = pii_sentences(300, seed=42)  # new names, addresses and draws of the training frames
    found = tag([t for _, t, _ in sents])
    for lang in ("en", "zh"):
        gold = {(i, *s) for i, (g, _, spans) in enumerate(sents) if g == lang for s in spans}
        pred = {(i, *s) for i, (g, _, _) in enumerate(sents) if g == lang for s in found[i]}
        per = span_report(gold, pred)["per_type"]
        assert per["person"]["recall"] >= 0.8 and per["address"]["recall"] >= 0.75, (lang, per)


def test_anonymize_masks_names_and_addresses_with_the_tagger(tagger, tmp_path, capsys):
    from lmforge.train.predict import entity_tagger

    _, text, spans = pii_sentences(1, languages=("en",), seed=5)[0]
    masked, counts = anonymize_text(text, ("person", "address", "email", "phone"), tagger=entity_tagger(tagger))
    for _, a, b in spans:
        assert text[a:b] not in masked
    assert counts["person"] + counts["address"] >= 1
    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for _, t, _ in pii_sentences(20, seed=6)),
                   encoding="utf-8")
    assert main(["data", "anonymize", str(src), "--out", str(tmp_path / "o.jsonl"), "--types", "person,address,email",
                 "--tagger", str(tagger), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["documents"] == 20 and r["found"]["person"] >= 15 and "[PERSON]" in (tmp_path / "o.jsonl").read_text()


def test_names_without_a_tagger_or_with_the_wrong_run_are_one_sentence(tmp_path, capsys, fine_tuned_classifier):
    src = tmp_path / "a.txt"
    src.write_text("Mary Jones lives here.", encoding="utf-8")
    out = tmp_path / "o.txt"
    assert main(["data", "anonymize", str(src), "--out", str(out), "--types", "person"]) == 2
    assert "person are found by a tagger" in capsys.readouterr().err and not out.exists()
    assert main(["data", "anonymize", str(src), "--out", str(out), "--types", "person", "--tagger",
                 str(fine_tuned_classifier[0])]) == 2
    assert "is not an entity tagger" in capsys.readouterr().err and not out.exists()
    assert main(["data", "pii-examples", "--out", str(tmp_path / "x.jsonl"), "--languages", "en,fr"]) == 2
    assert "--languages fr is not known" in capsys.readouterr().err

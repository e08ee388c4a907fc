"""Augmentation (data/augment.py): EDA's four operations do what the paper says on English (WordNet)
and Chinese (jieba + Cilin) text, files keep their format and labels, fine-tuning augments only its
training rows, and bad input is one sentence."""

import csv
import json
import random
from collections import Counter

import pytest

from lmforge.cli import main
from lmforge.data import augment
from lmforge.data.augment import (Augmenter, Words, chinese_synonyms, english_synonyms, random_deletion,
                                  random_insertion, random_swap, synonym_replacement)
from lmforge.errors import LmforgeError

pytestmark = pytest.mark.skipif(not any((__import__("pathlib").Path(d).expanduser() / "data.noun").is_file()
                                        for d in augment.WORDNET_DIRS), reason="WordNet is not installed (Debian: "
                                "apt install wordnet-base; .ci/run installs it)")

EN = "The film was wonderful and the actors gave a brilliant performance in every scene."
ZH = "这部电影的剧情非常精彩，演员的表演也很出色。"


def test_wordnet_and_cilin_give_real_synonyms():
    en = english_synonyms()
    assert {"movie", "picture", "flick"} <= set(en["film"]) and "film" not in en["film"]
    assert "home" in en["house"]
    zh = chinese_synonyms()
    assert "影片" in zh["电影"] and "电影" not in zh["电影"]


def test_synonym_replacement_changes_n_words_to_their_synonyms():
    w = Words(EN)
    out = synonym_replacement(w, w.tokens, 2, random.Random(0))
    assert len(out) == len(w.tokens)
    changed = [(a, b) for a, b in zip(w.tokens, out) if a != b]
    assert 1 <= len({w.core(a)[1].lower() for a, _ in changed}) <= 2  # n words (everywhere they occur)
    for a, b in changed:
        lead, word, trail = w.core(a)
        assert b.startswith(lead) and b.endswith(trail)  # punctuation stays
        assert w.core(b)[1].lower() in {s.lower() for s in english_synonyms()[word.lower()]}


def test_insertion_swap_and_deletion_keep_the_other_words():
    w = Words(EN)
    rng = random.Random(1)
    ins = random_insertion(w, w.tokens, 2, rng)
    assert len(ins) == len(w.tokens) + 2
    rest = list(ins)
    for t in w.tokens:  # the original is a subsequence of the result
        rest = rest[rest.index(t) + 1:]
    added = list((Counter(ins) - Counter(w.tokens)).elements())
    assert all(any(a in english_synonyms().get(w.core(t)[1].lower(), ()) for t in w.tokens) for a in added)
    sw = random_swap(w, w.tokens, 2, rng)
    assert Counter(sw) == Counter(w.tokens) and 2 <= sum(a != b for a, b in zip(sw, w.tokens)) <= 4
    de = random_deletion(w, w.tokens, 0.3, rng)
    assert 1 <= len(de) < len(w.tokens)
    rest = list(w.tokens)
    for t in de:
        rest = rest[rest.index(t) + 1:]
    assert random_deletion(w, ["word"], 0.99, rng) == ["word"]  # one word always stays


def test_alpha_sets_how_many_words_change():
    """n_a = max(1, floor(alpha L)): 15 words at alpha 0.2 -> 3, at 0.1 -> 1, and never 0."""
    assert [Augmenter(alpha=a).changes(15) for a in (0.2, 0.1, 0.01)] == [3, 1, 1]
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    for v in Augmenter(("swap",), n=3, alpha=0.2, seed=0).variants([text])[0]:
        assert 2 <= sum(a != b for a, b in zip(v.split(), text.split())) <= 6  # 3 swaps move 2 to 6 words


def test_chinese_is_segmented_and_gets_cilin_synonyms():
    w = Words(ZH)
    assert w.chinese and "电影" in w.tokens
    out = synonym_replacement(w, w.tokens, 2, random.Random(0))
    changed = [(a, b) for a, b in zip(w.tokens, out) if a != b]
    assert changed and all(b in chinese_synonyms()[a] for a, b in changed)
    assert w.text(out) != ZH and " " not in w.text(out)  # Chinese joins without spaces


def test_variants_are_distinct_seeded_and_at_most_n():
    aug = Augmenter(n=4, alpha=0.1, seed=3)
    first = aug.variants([EN, ZH, "word"])
    assert first == Augmenter(n=4, alpha=0.1, seed=3).variants([EN, ZH, "word"])
    assert first != Augmenter(n=4, alpha=0.1, seed=4).variants([EN, ZH, "word"])
    for text, vs in zip([EN, ZH], first):
        assert len(vs) == 4 and len(set(vs)) == 4 and text not in vs
    assert len(first[2]) <= 4 and "word" not in first[2]


def test_a_labelled_csv_keeps_its_labels_and_columns(tmp_path, capsys):
    src = tmp_path / "rows.csv"
    src.write_text('id,text,label\n1,"The film was wonderful, truly.",pos\n2,A dull and slow story.,neg\n'
                   f"3,{ZH},pos\n", encoding="utf-8")
    out = tmp_path / "more.csv"
    assert main(["data", "augment", str(src), "--out", str(out), "--task", "classify", "--n", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert r["rows"] == 3 and len(rows) == 3 + r["added"] and r["added"] >= 7
    assert [row["text"] for row in rows if row["id"] == "1"][0] == "The film was wonderful, truly."
    for row in rows:
        assert row["label"] == {"1": "pos", "2": "neg", "3": "pos"}[row["id"]]


def test_jsonl_and_txt_keep_their_format(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"review": EN, "y": 1}) + "\n", encoding="utf-8")
    main(["data", "augment", str(src), "--out", str(tmp_path / "o.jsonl"), "--column", "review"])
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all(x["y"] == 1 for x in lines) and lines[0]["review"] == EN
    txt = tmp_path / "lines.txt"
    txt.write_text(EN + "\n\n" + "A dull and slow story.\n", encoding="utf-8")
    main(["data", "augment", str(txt), "--out", str(tmp_path / "o.txt"), "--ops", "swap,delete", "--n", "2"])
    assert len((tmp_path / "o.txt").read_text().splitlines()) == 6


@pytest.mark.parametrize("args, message", [
    (["--task", "classify"], "row 1 has no label in a column 'label'"),
    (["--ops", "synonym,shuffle"], "--ops shuffle is not known"),
    (["--n", "0"], "1 or more variants"),
    (["--alpha", "1.5"], "between 0 and 1"),
    (["--ops", "backtranslate"], "--via THERE,BACK"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, capsys, args, message):
    src = tmp_path / "plain.csv"
    src.write_text("text\nThe film was wonderful.\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["data", "augment", str(src), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_without_wordnet_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(augment, "WORDNET_DIRS", (str(tmp_path),))
    monkeypatch.delenv("LMFORGE_WORDNET", raising=False)
    english_synonyms.cache_clear()
    try:
        with pytest.raises(LmforgeError, match="apt install wordnet-base"):
            Augmenter(("synonym",)).variants([EN])
    finally:
        english_synonyms.cache_clear()


def test_finetune_augments_training_rows_only(tmp_path, capsys):
    from lmforge.config import Recipe, TaskConfig, TrainConfig
    from lmforge.train.finetune import Inputs, augmented
    from tests.test_finetune import rows

    data = rows(40)
    inputs = Inputs(None, None, {"text_column": [t for t, _ in data], "label_column": [y for _, y in data]})
    split = (list(range(30)), list(range(30, 35)), list(range(35, 40)))
    recipe = Recipe(task=TaskConfig(augment="swap,delete", augment_n=2), train=TrainConfig(seed=1))
    new, new_split, added = augmented(inputs, split, recipe, log=lambda *a: None)
    assert new_split[1:] == split[1:] and new_split[0][:30] == split[0] and added == len(new_split[0]) - 30
    assert added > 30 and min(new_split[0][30:]) == 40  # only new rows join, and only the training split
    texts, labels = new.rows["text_column"], new.rows["label_column"]
    assert texts[:40] == inputs.rows["text_column"]
    for i in new_split[0][30:]:  # each variant holds only its original's words and keeps its label
        orig = next(j for j in split[0] if set(texts[i].split()) <= set(texts[j].split()) and labels[j] == labels[i])
        assert orig is not None


def test_cli_finetune_with_augment_reports_the_added_rows(tmp_path, capsys):
    from tests.conftest import classifier_base

    data = classifier_base(tmp_path)
    assert main(["finetune", str(tmp_path / "base"), "--data", str(data), "--augment", "--augment-n", "2",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["train_rows"] == 96 and 96 < r["augmented_rows"] <= 192 and r["test_rows"] == 12
    assert main(["finetune", str(tmp_path / "base"), "--data", str(data), "--task", "token", "--augment",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "--augment" in capsys.readouterr().err


def test_the_doc_shows_what_the_code_does():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data-preparation.md").read_text(encoding="utf-8")
    en = "The old house stood quietly at the end of the road, and the children loved its big garden."
    zh = "这家餐厅的服务非常热情，菜的味道也很好，我们下次还会再来。"
    assert Augmenter(alpha=0.1).changes(len(Words(en).tokens)) == 1 and len(Words(en).tokens) == 18
    assert Augmenter(alpha=0.1).changes(len(Words(zh).tokens)) == 2 and len(Words(zh).tokens) == 20
    for op in ("synonym", "insert", "swap", "delete"):
        a, b = Augmenter((op,), n=1, alpha=0.1, seed=0).variants([en, zh])
        assert f"    {op:8} {a[0]}\n" in doc and f"    {op:8} {b[0]}\n" in doc
    assert "把" in chinese_synonyms()["来"] and "planetary house" in english_synonyms()["house"]

"""Near-duplicates (lmforge.data.dedupe, `lmforge data dedupe`, cleaning with data.near_duplicates):
the MinHash estimate and LSH's curve against their formulas, planted near-copies found in English and
Chinese, clusters keep their first document, test leakage, and bad input."""

import json
import random

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data.clean import clean_documents
from lmforge.data.dedupe import (MinHasher, candidate_probability, clusters, jaccard, leakage, lsh_shape,
                                 near_duplicate_pairs, remove_near_duplicates)

WORDS = ("time love king lord night day sword crown heart blood honour grace fair soul death war peace song "
         "river stone light dark friend field tower bread").split()


def documents(n: int, seed: int = 0, length: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(length)) for _ in range(n)]


def near_copy(doc: str, changes: int, seed: int) -> str:
    rng = random.Random(seed)
    words = doc.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = "changed"
    return " ".join(words)


def test_the_lsh_curve_by_hand():
    # 2 bands of 2 rows, J = 0.5: both rows of a band agree with chance 0.25; some band does: 1 - 0.75^2
    assert candidate_probability(0.5, 2, 2) == pytest.approx(0.4375)
    bands, rows = lsh_shape(0.8)
    assert bands * rows <= 128 and 0.6 < (1 / bands) ** (1 / rows) < 0.9  # the curve rises just below 0.8
    assert candidate_probability(0.95, bands, rows) > 0.99 and candidate_probability(0.3, bands, rows) < 0.01


def test_the_minhash_estimate_is_the_jaccard_similarity():
    hasher = MinHasher(256)
    rng = np.random.default_rng(0)
    for overlap in (0.2, 0.5, 0.9):
        common = set(rng.integers(0, 2**32, int(1000 * overlap)).tolist())
        a = common | set(rng.integers(0, 2**32, 1000 - len(common)).tolist())
        b = common | set(rng.integers(0, 2**32, 1000 - len(common)).tolist())
        estimate = float((hasher.signature(a) == hasher.signature(b)).mean())
        assert abs(estimate - jaccard(a, b)) < 0.08


def test_planted_near_copies_are_found_and_distinct_documents_are_not():
    docs = documents(200)
    planted = {(i, 200 + n) for n, i in enumerate(range(0, 40, 2))}
    docs += [near_copy(docs[i], 2, seed=i) for i, _ in sorted(planted)]
    found = {(i, j) for i, j, _ in near_duplicate_pairs(docs, 0.8)}
    assert found == planted
    kept, groups = remove_near_duplicates(docs, 0.8)
    assert kept == docs[:200] and all(c.kept < min(c.removed) for c in groups) and len(groups) == 20


def test_chinese_near_copies_by_characters():
    rng = random.Random(1)
    chars = "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳云腾致雨露结为霜"
    docs = ["".join(rng.choice(chars) for _ in range(200)) for _ in range(30)]
    docs.append(docs[3][:100] + "啊" + docs[3][101:])
    assert [(i, j) for i, j, _ in near_duplicate_pairs(docs, 0.8)] == [(3, 30)]


def test_clusters_join_chains_and_keep_the_first():
    groups = clusters(6, [(1, 4, 0.9), (4, 5, 0.85), (0, 2, 0.95)])
    assert [(c.kept, c.removed, c.similarity) for c in groups] == [(0, [2], 0.95), (1, [4, 5], 0.85)]


def test_test_documents_that_leak_from_training():
    train = documents(100, seed=2)
    test = documents(10, seed=3) + [near_copy(train[7], 1, seed=9)]
    leaks = leakage(train, test, 0.8)
    assert [(x["test"], x["train"]) for x in leaks] == [(10, 7)] and leaks[0]["similarity"] > 0.9


def test_cleaning_drops_near_copies_when_asked():
    docs = documents(20) + [near_copy(documents(20)[5], 1, seed=0)]
    kept, report = clean_documents(docs, near=0.8)
    assert len(kept) == 20 and report.near_duplicates_removed == 1
    assert len(clean_documents(docs)[0]) == 21  # off by default


def test_the_command_and_its_bad_input(tmp_path, capsys):
    docs = documents(30) + [near_copy(documents(30)[4], 1, seed=0)]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(docs))
    test = tmp_path / "t.txt"
    test.write_text(near_copy(docs[11], 1, seed=5))
    out = tmp_path / "kept.txt"
    assert main(["data", "dedupe", str(corpus), "--out", str(out), "--test", str(test), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["removed"] == 1 and r["clusters"][0]["kept"] == 4 and r["leakage"][0]["train"] == 11
    assert out.read_text().count("\n\n") == 30
    assert main(["data", "dedupe", str(corpus), "--threshold", "1.5"]) == 2
    assert "(0, 1]" in capsys.readouterr().err


def test_the_doc_shows_what_the_code_does():
    from pathlib import Path

    doc = " ".join((Path(__file__).resolve().parents[1] / "docs" / "data-preparation.md").read_text().split())
    bands, rows = lsh_shape(0.8)
    assert f"b = {bands} bands of r = {rows}" in doc
    probs = ", ".join(f"{candidate_probability(j, bands, rows):.3f}" for j in (0.5, 0.7, 0.8)) + \
        f" and {candidate_probability(0.9, bands, rows):.3f}"
    assert f"with probability {probs}" in doc
    assert f"1 - 0.75^2 = {candidate_probability(0.5, 2, 2):.4f}" in doc

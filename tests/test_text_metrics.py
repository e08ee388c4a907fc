"""BLEU, chrF and ROUGE against sacrebleu and rouge-score themselves, and against values worked by
hand; the bootstrap intervals; the copy and lead-1 baselines; the report; the BLEU-by-hand doc."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU, CHRF

from lmforge.errors import LmforgeError
from lmforge.evaluate import bleu, bleu_ci, chrf, rouge_ci, rouge_scores, text_report
from lmforge.evaluate.baselines import copy_source, lead_1, split_sentences
from lmforge.evaluate.corpus import bootstrap_ci, mean_ci
from lmforge.evaluate.rouge import RougeTokenizer, rouge_pairs
from lmforge.evaluate.translation import (bleu_by_hand, bleu_from_statistics, bleu_statistics, tokenizer_for_language,
                                          tokenizer_for_references)

DOCS = Path(__file__).resolve().parents[1] / "docs"
EN_HYP = ["the cat sat on a mat .", "a small dog is in the garden ."]
EN_REF = ["the cat sat on the mat .", "there is a small dog in the garden ."]
ZH_HYP = ["我今天很想吃苹果。", "北京的天气非常好。", "他在图书馆看书"]
ZH_REF = ["我今天想吃一个苹果。", "北京今天的天气很好。", "他在图书馆里看书。"]


def corpus(n: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    """n reference sentences from a small vocabulary, and hypotheses that drop and swap some words."""
    rng = random.Random(seed)
    words = "the a cat dog sat ran on under mat garden house red small big quickly today".split()
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(words) for _ in range(rng.randint(4, 14))]
        hyp = [w for w in ref if rng.random() > 0.2]
        if len(hyp) > 2 and rng.random() < 0.5:
            i = rng.randrange(len(hyp) - 1)
            hyp[i], hyp[i + 1] = hyp[i + 1], hyp[i]
        refs.append(" ".join(ref) + " .")
        hyps.append(" ".join(hyp) + " .")
    return hyps, refs


# ---- BLEU and chrF ----

def test_bleu_and_chrf_are_sacrebleus():
    hyps, refs = corpus()
    b = bleu(hyps, refs)
    metric = BLEU(tokenize="13a")
    expected = metric.corpus_score(hyps, [refs])
    assert b["score"] == expected.score and b["signature"] == str(metric.get_signature())
    assert "tok:13a" in b["signature"] and b["precisions"] == expected.precisions
    assert (b["bp"], b["hyp_len"], b["ref_len"]) == (expected.bp, expected.sys_len, expected.ref_len)
    c, metric = chrf(hyps, refs), CHRF()
    assert c["score"] == metric.corpus_score(hyps, [refs]).score and c["signature"] == str(metric.get_signature())


def test_chinese_bleu_uses_the_zh_tokenizer():
    assert tokenizer_for_references(ZH_REF) == "zh"
    b = bleu(ZH_HYP, ZH_REF)
    assert b["score"] > 0 and "tok:zh" in b["signature"]
    assert b["score"] == BLEU(tokenize="zh").corpus_score(ZH_HYP, [ZH_REF]).score
    assert bleu(ZH_HYP, ZH_REF, lang="zh")["score"] == b["score"]
    # Without it, each sentence is one "word" and nothing matches: the reason for the choice.
    assert bleu(ZH_HYP, ZH_REF, tokenize="13a")["score"] == 0.0


def test_tokenizer_choice():
    assert tokenizer_for_references(EN_REF) == "13a"
    assert tokenizer_for_references(["La canción más bonita del año.", "¿Dónde está el niño?"]) == "13a"
    assert tokenizer_for_references(["The minister Wang Yi (王毅) arrived in Berlin on Monday."]) == "13a"
    assert tokenizer_for_references(["我用Python写了一个程序，运行了3次。"]) == "zh"
    assert tokenizer_for_references(["", " "]) == "13a"
    for lang, tok in (("zh", "zh"), ("zh-CN", "zh"), ("ZH_Hant", "zh"), ("en", "13a"), ("es", "13a"),
                      ("ja", "ja-mecab"), ("ko", "ko-mecab")):
        assert tokenizer_for_language(lang) == tok, lang
    assert "tok:intl" in bleu(EN_HYP, EN_REF, tokenize="intl")["signature"]


def test_bleu_by_hand_is_sacrebleus():
    hyps, refs = corpus(seed=3)
    hand = bleu_by_hand(hyps, refs)
    s = BLEU().corpus_score(hyps, [refs])
    assert all(hand["matches"]) and hand["matches"] == s.counts and hand["totals"] == s.totals
    assert (hand["c"], hand["r"]) == (s.sys_len, s.ref_len)
    assert hand["bleu"] == pytest.approx(s.score, rel=1e-12)
    # A missing 4-gram match: the plain formula gives 0, where sacrebleu smooths.
    zero = bleu_by_hand(["the cat sat"], ["the cat sat down"])
    assert zero["matches"][3] == 0 and zero["bleu"] == 0.0


def test_encoder_decoder_doc_numbers():
    """docs/encoder-decoder.md, "Scoring: BLEU by hand": every number is the code's and sacrebleu's."""
    doc = (DOCS / "encoder-decoder.md").read_text(encoding="utf-8")
    assert doc.startswith("# Encoder-decoder models\n") and "\n## Scoring: BLEU by hand\n" in doc
    for h, r, i in zip(EN_HYP, EN_REF, (1, 2)):
        assert f"| {i} | {h} | {r} |" in doc
    hand = bleu_by_hand(EN_HYP, EN_REF)
    pairs = [bleu_by_hand([h], [r]) for h, r in zip(EN_HYP, EN_REF)]
    for n in range(4):
        m, t = hand["matches"][n], hand["totals"][n]
        each = " | ".join(f"{p['matches'][n]}/{p['totals'][n]}" for p in pairs)
        row = f"| {n + 1} | {each} | p{n + 1} = {m}/{t} |"
        assert row in doc, row
        assert f"log p{n + 1} = ln({m}/{t})".replace("  ", " ") in doc.replace("  ", " ")
        assert f"= {math.log(m / t):.4f}" in doc
    c, r = hand["c"], hand["r"]
    assert c < r and f"c = {pairs[0]['c']} + {pairs[1]['c']} = {c}" in doc
    assert f"r = {pairs[0]['r']} + {pairs[1]['r']} = {r}" in doc
    assert f"BP = exp(1 - {r}/{c}) = {hand['bp']:.4f}" in doc
    logs = sum(math.log(m / t) for m, t in zip(hand["matches"], hand["totals"]))
    assert f"mean log p_n = {logs:.4f} / 4 = {hand['log_mean']:.4f},   exp({hand['log_mean']:.4f}) = " \
           f"{math.exp(hand['log_mean']):.4f}" in doc
    assert f"BLEU = 100 * {hand['bp']:.4f} * {math.exp(hand['log_mean']):.4f} = {hand['bleu']:.2f}" in doc
    metric = BLEU()
    s = metric.corpus_score(EN_HYP, [EN_REF])
    assert hand["bleu"] == pytest.approx(s.score, rel=1e-12) and f"    {s}\n" in doc
    signature = str(metric.get_signature())
    assert signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    assert f"`{signature.rpartition('|')[0]}` plus the version" in doc
    one, two = (p["bleu"] for p in pairs)
    assert f"({one:.2f} and {two:.2f}) is {(one + two) / 2:.2f}" in doc
    assert f"BP = exp(1 - {pairs[1]['r']}/{pairs[1]['c']}) = {pairs[1]['bp']:.4f}" in doc
    assert f"all {r} reference tokens (BP = {hand['bp']:.4f})" in doc


# ---- ROUGE ----

def test_rouge_by_hand():
    # hyp: the cat was found under the bed (7)   ref: the cat was under the bed (6)
    # ROUGE-1: overlap 6 (the x2, cat, was, under, bed): P = 6/7, R = 1, F1 = 12/13
    # ROUGE-2: overlap 4 of 6 and 5 bigrams (the cat, cat was, under the, the bed): F1 = 2(2/3)(4/5) / (22/15) = 8/11
    # ROUGE-L: LCS "the cat was under the bed" = 6: the same as ROUGE-1 here
    hyp, ref = "The cat was found under the bed.", "the cat was under the bed"
    r = rouge_scores([hyp], [ref])
    assert r["n"] == 1
    assert r["rouge1"] == pytest.approx({"precision": 600 / 7, "recall": 100.0, "f1": 1200 / 13})
    assert r["rouge2"] == pytest.approx({"precision": 200 / 3, "recall": 80.0, "f1": 800 / 11})
    assert r["rougeL"] == pytest.approx(r["rouge1"])
    # On ASCII text our tokenizer is rouge-score's: the same numbers from rouge-score itself.
    direct = RougeScorer(["rouge1", "rouge2", "rougeL"]).score(ref, hyp)
    for k, v in direct.items():
        assert r[k]["f1"] == pytest.approx(100 * v.fmeasure) and r[k]["precision"] == pytest.approx(100 * v.precision)
    # The corpus score is the mean over pairs, not pooled counts.
    two = rouge_scores([hyp, "a dog"], [ref, "a dog barked"])
    assert two["rouge1"]["f1"] == pytest.approx((1200 / 13 + 80.0) / 2)


def test_rouge_keeps_every_script():
    tok = RougeTokenizer()
    assert tok.tokenize("La CANCIÓN más bonita") == ["la", "canción", "más", "bonita"]
    assert tok.tokenize("cancio\u0301n") == ["canción"]  # a decomposed accent stays in its word
    assert tok.tokenize("我用Python写了3个程序。") == ["我", "用", "python", "写", "了", "3", "个", "程", "序"]
    default = RougeScorer(["rouge1"])
    # Chinese: rouge-score's own tokenizer keeps no character, so any Chinese summary scores 0.
    assert default.score(ZH_REF[0], ZH_HYP[0])["rouge1"].fmeasure == 0.0
    ours = rouge_scores(ZH_HYP[:1], ZH_REF[:1])["rouge1"]["f1"]
    direct = RougeScorer(["rouge1"], tokenizer=tok).score(ZH_REF[0], ZH_HYP[0])["rouge1"].fmeasure
    assert ours > 0 and ours == pytest.approx(100 * direct)
    # Spanish: rouge-score cuts "canción" into "canci" + "n" and "acción" into "acci" + "n", so two
    # sentences with no word in common share the token "n"; with ours they share nothing.
    hyp, ref = "acción rápida", "canción lenta"
    assert default.score(ref, hyp)["rouge1"].fmeasure > 0
    assert rouge_scores([hyp], [ref])["rouge1"]["f1"] == 0.0
    # Shared accented words: ours gives the hand value, 2 of 4 and 2 of 3 words: F1 = 4/7.
    hyp, ref = "la canción más bonita", "una canción bonita"
    assert rouge_scores([hyp], [ref])["rouge1"]["f1"] == pytest.approx(400 / 7)
    assert default.score(ref, hyp)["rouge1"].fmeasure == pytest.approx(0.6)  # canci, n, bonita of 6 and 4


def test_stemming_is_off_by_default():
    hyp, ref = "the dogs were running", "the dog runs"
    assert rouge_scores([hyp], [ref])["rouge1"]["f1"] == pytest.approx(100 * 2 * (1 / 4) * (1 / 3) / (7 / 12))
    stemmed = rouge_scores([hyp], [ref], stem=True)["rouge1"]["f1"]
    assert stemmed == pytest.approx(100 * RougeScorer(["rouge1"], use_stemmer=True).score(ref, hyp)["rouge1"].fmeasure)
    assert RougeTokenizer(stem=True).tokenize("canción canciones") == ["canción", "cancion"]


# ---- bootstrap ----

def test_resampled_bleu_of_the_full_set_is_corpus_bleu():
    cases = [corpus(), (ZH_HYP, ZH_REF), (["", "the cat"], ["a dog ran", "the cat"]),  # an empty hypothesis
             (["the cat sat", "a dog ran"], ["the cat sat down", "a dog ran off"])]  # no 4-gram match: smoothing
    for hyps, refs in cases:
        stats = bleu_statistics(hyps, refs)
        assert stats.shape == (len(hyps), 10)
        assert bleu_from_statistics(stats.sum(0)) == bleu(hyps, refs)["score"]


def test_bootstrap_intervals():
    hyps, refs = corpus(80, seed=1)
    point = bleu(hyps, refs)["score"]
    lo, hi = bleu_ci(hyps, refs, seed=7)
    assert lo < point < hi and hi - lo < 30
    assert bleu_ci(hyps, refs, seed=7) == (lo, hi)  # reproducible
    assert bleu_ci(hyps, refs, seed=8) != (lo, hi)
    assert bleu_ci(hyps, refs, seed=7, level=0.5) != (lo, hi)
    lo50, hi50 = bleu_ci(hyps, refs, seed=7, level=0.5)
    assert lo <= lo50 <= hi50 <= hi
    point = rouge_scores(hyps, refs)["rougeL"]["f1"]
    lo, hi = rouge_ci(hyps, refs, seed=7)
    assert lo < point < hi and rouge_ci(hyps, refs, seed=7) == (lo, hi)


def test_bootstrap_ci_by_hand():
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)  # every resample is the same
    values = np.array([0.0, 1.0])
    # Each resample's mean is (number of 1s drawn) / 2, drawn from Binomial(2, 1/2) by the same generator.
    rng = np.random.default_rng(3)
    means = [values[rng.integers(0, 2, 2)].mean() for _ in range(200)]
    assert mean_ci(values, resamples=200, seed=3) == tuple(np.percentile(means, [2.5, 97.5]))
    assert bootstrap_ci(lambda idx: float(len(idx)), 5, resamples=10) == (5.0, 5.0)


# ---- baselines ----

def test_split_sentences():
    assert split_sentences("It rained. We stayed in! Why? Because.") == [
        "It rained.", "We stayed in!", "Why?", "Because."]
    assert split_sentences('He said "Stop!" and left. Then it rained.') == [
        'He said "Stop!" and left.', "Then it rained."]
    assert split_sentences('"Stop!" He left.') == ['"Stop!"', "He left."]
    assert split_sentences("Pi is 3.14 today, e.g. in Spain. Yes.") == ["Pi is 3.14 today, e.g. in Spain.", "Yes."]
    assert split_sentences("今天下雨。我们不去了！好吗？") == ["今天下雨。", "我们不去了！", "好吗？"]
    assert split_sentences("他说：“走吧。”然后走了。") == ["他说：“走吧。”", "然后走了。"]
    assert split_sentences("¿Qué pasa? ¡Vamos! Bien.") == ["¿Qué pasa?", "¡Vamos!", "Bien."]
    assert split_sentences("Headline with no stop\n\nThe body starts. It goes on.") == [
        "Headline with no stop", "The body starts.", "It goes on."]
    assert split_sentences("a body with no sentence end") == ["a body with no sentence end"]
    assert split_sentences("  \n ") == [] and split_sentences("Wait... what?! OK.") == ["Wait... what?!", "OK."]


def test_lead_1_and_copy_baselines():
    bodies = ["Prices rose 3.5% in May. Economists had expected less.", "北京今天下雨。明天会晴。",
              "no sentence end here", ""]
    assert lead_1(bodies) == ["Prices rose 3.5% in May.", "北京今天下雨。", "no sentence end here", ""]
    assert copy_source(("a b", "c")) == ["a b", "c"]
    refs = ["Prices rose in May.", "北京下雨。", "nothing", "empty"]
    r = text_report(["Prices rose.", "北京下雨了。", "x", "y"], refs, sources=bodies, baseline="lead-1", resamples=0)
    base = r["baseline"]
    assert base["name"] == "lead-1" and set(base) == {"name", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert base["rouge1"] == pytest.approx(rouge_scores(lead_1(bodies), refs)["rouge1"]["f1"])
    assert base["bleu"] == bleu(lead_1(bodies), refs, tokenize="13a")["score"]  # the report's tokenizer


# ---- the report ----

def test_text_report():
    hyps, refs = corpus(40, seed=2)
    sources = [h.upper() for h in hyps]
    r = text_report(hyps, refs, sources=sources, baseline="copy", seed=1)
    assert set(r) == {"n", "bleu", "bleu_signature", "chrf", "chrf_signature", "rouge1", "rouge2", "rougeL",
                      "bleu_ci", "rougeL_ci", "baseline"}
    assert r["n"] == 40 and r["bleu"] == bleu(hyps, refs)["score"] and r["chrf"] == chrf(hyps, refs)["score"]
    ro = rouge_scores(hyps, refs)
    assert [r[k] for k in ("rouge1", "rouge2", "rougeL")] == [ro[k]["f1"] for k in ("rouge1", "rouge2", "rougeL")]
    assert r["bleu_ci"] == list(bleu_ci(hyps, refs, seed=1)) and r["rougeL_ci"] == list(rouge_ci(hyps, refs, seed=1))
    assert r["baseline"]["bleu"] == bleu(sources, refs)["score"] < r["bleu"]  # case-sensitive BLEU
    assert "bleu_ci" not in text_report(hyps, refs, resamples=0)
    zh = text_report(ZH_HYP, ZH_REF, resamples=50)
    assert "tok:zh" in zh["bleu_signature"] and zh["bleu"] > 0 and zh["rougeL"] > 0
    assert text_report(ZH_HYP, ZH_REF, lang="en", resamples=0)["bleu"] == 0.0


@pytest.mark.parametrize("call, words", [
    (lambda: bleu([], []), "no hypotheses to score"),
    (lambda: rouge_scores(["a"], ["a", "b"]), "1 hypotheses but 2 references"),
    (lambda: text_report(["a", "b"], ["a"]), "2 hypotheses but 1 references"),
    (lambda: chrf("a cat", "a cat"), "hypotheses is one string"),
    (lambda: bleu(["a", None], ["a", "b"]), "hypotheses[1] is NoneType"),
    (lambda: rouge_scores(["a"], [["a", "b"]]), "references[0] is list"),
    (lambda: bleu(["a"], ["a"], tokenize="flores200"), "tokenize='flores200' is not a BLEU tokenizer"),
    (lambda: bleu(["a"], ["a"], lang=""), "lang='' is not a language code"),
    (lambda: bleu_ci(["a"], ["a"], resamples=0), "resamples=0 is not a number of resamples"),
    (lambda: rouge_ci(["a"], ["a"], level=1.5), "level=1.5 is not a confidence level"),
    (lambda: rouge_ci(["a"], ["a"], kind="rougeLsum"), "kind='rougeLsum' is not a ROUGE score"),
    (lambda: text_report(["a"], ["a"], resamples=-1), "resamples=-1"),
    (lambda: text_report(["a"], ["a"], baseline="lead-3", sources=["a"]), "baseline='lead-3' is not a baseline"),
    (lambda: text_report(["a"], ["a"], baseline="copy"), "needs both `sources` and `baseline`"),
    (lambda: text_report(["a"], ["a"], sources=["a"]), "needs both `sources` and `baseline`"),
    (lambda: text_report(["a"], ["a"], sources=["a", "b"], baseline="copy"), "2 sources but 1 hypotheses"),
    (lambda: lead_1("one body"), "bodies is one string"),
])
def test_bad_inputs(call, words):
    with pytest.raises(LmforgeError) as e:
        call()
    message = str(e.value)
    assert words in message and "\n" not in message
    assert any(fix in message for fix in ("pass", "use", "set", "install")), message


def test_japanese_without_mecab_says_how_to_install():
    pytest.importorskip("sacrebleu")
    try:
        import MeCab  # noqa: F401
    except ImportError:
        with pytest.raises(LmforgeError, match=r'pip install "sacrebleu\[ja\]"'):
            bleu(["猫が好きです。"], ["猫が大好きです。"], lang="ja")
    else:
        pytest.skip("MeCab is installed")

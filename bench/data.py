"""`python -m bench.data [--json] [--quick] [--only ...]`: the data tools measured on real and
generated text, each beside its peer where one runs here.

    anonymize  precision and recall per kind on generated English and Chinese sentences whose spans
               are known (Faker values in frames): the six pattern kinds; person names and addresses
               by two taggers that lmforge fine-tunes on `lmforge data pii-examples` (from MiniLM,
               and from a small BERT trained from scratch), scored on new sentences from the training
               frames and from frames they never saw. Presidio is tried; why it cannot run is recorded.
    eda        BBC News with 100 training articles, fine-tuned (MiniLM) with and without EDA
               (--augment, n 4, alpha 0.1; and without it for as many steps): test accuracy, mean and
               std over 5 seeds
    dedupe     MinHash + LSH on Shakespeare's 6-line passages with planted near-copies: recall of the copies
               whose Jaccard is over the threshold, precision, seconds; datasketch beside it
    word2vec   skip-gram on Shakespeare, BBC News and People's Daily, lmforge's PyTorch code and gensim:
               seconds, nearest neighbours, and (English) Spearman correlation with WordSim-353 where
               gensim ships it

Results: one JSON object (--json) or a table; bench/results/ keeps dated runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("anonymize", "eda", "dedupe", "word2vec")


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def lmforge(argv: list[str]) -> int:
    """An lmforge command in this process, its stdout sent to stderr: stdout holds the bench's JSON alone."""
    import contextlib

    from lmforge.cli import main as lmforge_main

    with contextlib.redirect_stdout(sys.stderr):
        return lmforge_main(argv)


# ------------------------------------------------------------------------------------------ anonymize

FRAMES = {
    "en": ["Please contact {a} or {b} before Friday.", "Her record lists {a}; the form also gives {b}.",
           "Send the details to {a}, and copy {b}.", "We found {a} and {b} in the leaked file.",
           "{a} was used at checkout, then {b}.", "Details: {a} / {b}."],
    "zh": ["请在周五前联系{a}或{b}。", "她的记录里有{a}，表格上还有{b}。", "把详情发到{a}，并抄送{b}。",
           "泄露的文件里有{a}和{b}。", "结账时用了{a}，后来又用了{b}。", "详情：{a}／{b}。"],
}


def pattern_sentences(n: int, seed: int = 0) -> list[tuple[str, str, list]]:
    """n sentences (language, text, spans), two private values of different kinds in each."""
    from faker import Faker

    rng = random.Random(seed)
    out = []
    for lang, locale in (("en", "en_US"), ("zh", "zh_CN")):
        f = Faker(locale)
        f.seed_instance(seed)
        makers = {"email": f.email, "phone": f.phone_number, "card": f.credit_card_number, "ip": f.ipv4,
                  "url": f.url, **({"id": f.ssn} if lang == "zh" else {})}
        for _ in range(n // 2):
            a, b = rng.sample(sorted(makers), 2)
            va, vb = makers[a](), makers[b]()
            frame = rng.choice(FRAMES[lang])
            text = frame.format(a=va, b=vb)
            sa = frame.index("{a}")
            sb = text.index(vb, sa + len(va))
            out.append((lang, text, [(a, sa, sa + len(va)), (b, sb, sb + len(vb))]))
    return out


def scores(sents, found) -> dict:
    """Per language: span_report's per-kind precision and recall (exact character spans)."""
    from lmforge.evaluate.entities import span_report

    out = {}
    for lang in sorted({s[0] for s in sents}):
        gold = {(i, *sp) for i, (g, _, spans) in enumerate(sents) if g == lang for sp in spans}
        pred = {(i, *sp) for i, (g, _, _) in enumerate(sents) if g == lang for sp in found[i]}
        per = span_report(gold, pred)["per_type"]
        out[lang] = {k: {"precision": round(v["precision"], 4), "recall": round(v["recall"], 4), "n": v["support"]}
                     for k, v in per.items()}
    return out


def train_tagger(work: Path, quick: bool, base: str) -> tuple[Path, dict]:
    """A tagger fine-tuned by lmforge on generated sentences (train frames): from MiniLM, or from a
    2-layer BERT trained from scratch with a WordPiece vocabulary of the sentences; (run, what)."""
    from bench.classify import find_minilm
    data = work / "pii.jsonl"
    n = 1000 if quick else 4000
    if not data.exists():
        lmforge(["data", "pii-examples", "--out", str(data), "--n", str(n), "--seed", "0"])
    if base == "minilm":
        path, why = find_minilm(None)
        if path is None:
            return None, {"skipped": why}
        epochs, lr, what = 4, "1e-4", "MiniLM (all-MiniLM-L6-v2, 22.7M) fine-tuned"
    else:
        path, epochs, lr, what = _scratch_base(data, work), 10, "3e-3", "a 2-layer BERT (0.25M) from scratch"
    t0 = time.perf_counter()
    out = work / f"tagger-{base}"
    assert lmforge(["finetune", str(path), "--task", "token", "--data", str(data), "--epochs", str(1 if quick else epochs),
                 "--lr", lr, "--batch-size", "32", "--max-length", "96", "--metric", "entity_f1", "--out", str(out),
                 "--set", "train.progress=false"]) == 0
    return out, {"tagger": what, "train_sentences": n, "epochs": 1 if quick else epochs,
                 "seconds": round(time.perf_counter() - t0, 1)}


def _scratch_base(data: Path, work: Path) -> Path:
    import torch

    from lmforge.checkpoint import save_checkpoint
    from lmforge.config import model_config_from_preset
    from lmforge.models import build_model
    from lmforge.tokenizer import train_wordpiece

    rows = [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines()]
    tok = train_wordpiece([" ".join(r["tokens"]) for r in rows], 2000)
    torch.manual_seed(0)
    cfg = model_config_from_preset("bert-mini", vocab_size=tok.vocab_size, context_length=96, n_layer=2, d_model=64,
                                   n_head=4, dropout=0.0)
    save_checkpoint(work / "scratch-base", build_model(cfg), tok)
    return work / "scratch-base"


def presidio_row() -> dict:
    try:
        from presidio_analyzer import AnalyzerEngine

        AnalyzerEngine()
    except Exception as e:  # noqa: BLE001 (not installed, or no spaCy model: either way, why)
        return {"ran": False, "why": f"{type(e).__name__}: {str(e)[:200]}",
                "note": "Presidio finds names with a spaCy NER model (en_core_web_lg), fetched from GitHub, not PyPI; "
                        "there is none for Chinese in its default setup"}
    return {"ran": True}


def bench_anonymize(args) -> dict:
    from lmforge.data.anonymize import PATTERNS, find_spans
    from lmforge.data.pii import pii_sentences
    from lmforge.train.predict import entity_tagger

    n = 400 if args.quick else 2000
    t0 = time.perf_counter()
    sents = pattern_sentences(n, seed=1)
    found = [[(s.type, s.start, s.end) for s in find_spans(t, PATTERNS)] for _, t, _ in sents]
    out = {"patterns": {"sentences": len(sents), "seconds": round(time.perf_counter() - t0, 2),
                        "scores": scores(sents, found)}}
    for base in ("minilm", "scratch"):
        run, meta = train_tagger(args.work, args.quick, base)
        out[f"tagger_{base}"] = meta
        if run is None:
            continue
        tag = entity_tagger(run)
        for name, held in (("training_frames", False), ("held_out_frames", True)):
            s = pii_sentences(n // 2, seed=11, held_out=held)
            t0 = time.perf_counter()
            meta[name] = {"sentences": len(s), "scores": scores(s, tag([t for _, t, _ in s])),
                          "seconds": round(time.perf_counter() - t0, 1)}
    out["presidio"] = presidio_row()
    return out


# ------------------------------------------------------------------------------------------ eda


def bench_eda(args) -> dict:
    """BBC News: 100 training articles (20 a topic, drawn by the split's seed), 50 for validation, 500
    for test; MiniLM fine-tuned with and without EDA for each of 5 seeds."""
    import csv

    from bench.classify import find_minilm
    from lmforge.data.corpora import load_corpus

    base, why = find_minilm(None)
    if base is None:
        return {"skipped": why}
    corpus = load_corpus("bbc-news")
    rng = random.Random(0)
    rows = list(zip(corpus.documents, corpus.labels))
    rng.shuffle(rows)
    rows = rows[:650]
    path = args.work / "bbc650.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    seeds = [1, 2] if args.quick else [1, 2, 3, 4, 5]
    result: dict = {"train_rows": 100, "validation_rows": 50, "test_rows": 500, "base": "all-MiniLM-L6-v2",
                    "max_length": 128, "runs": {}}
    eda = ["--augment", "synonym,insert,swap,delete", "--augment-n", "4", "--augment-alpha", "0.1"]
    # none: 5 epochs of the 100 rows; eda: 5 epochs of the 500 rows (5 times the steps, as EDA's paper
    # compares); none_same_steps: 25 epochs of the 100 rows, so that more steps alone are not mistaken for EDA
    for arm, epochs, extra in (("none", 5, []), ("eda", 5, eda), ("none_same_steps", 25, [])):
        if arm not in args.arms.split(","):
            continue
        accs = []
        for seed in seeds:
            out = args.work / f"eda-{arm}-{seed}"
            argv = ["finetune", str(base), "--data", str(path), "--val-fraction", str(50 / 650), "--test-fraction",
                    str(500 / 650), "--epochs", str(1 if args.quick else epochs), "--lr", "1e-4", "--batch-size", "16",
                    "--max-length", "128", "--seed", str(seed), "--out", str(out), "--set", "train.progress=false",
                    *extra]
            assert lmforge(argv) == 0
            report = json.loads((out / "report.json").read_text())
            accs.append(report["test"]["accuracy"])
            result.setdefault("steps", {}).setdefault(arm, report["steps"])
            log(f"eda {arm} seed {seed}: test accuracy {accs[-1]:.4f} ({report['train_rows']} rows + "
                f"{report.get('augmented_rows', 0)} augmented)")
        result["runs"][arm] = {"accuracy": [round(a, 4) for a in accs], "mean": round(statistics.mean(accs), 4),
                               "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0}
    runs = result["runs"]
    if "eda" in runs and "none" in runs:
        result["gain"] = round(runs["eda"]["mean"] - runs["none"]["mean"], 4)
    if "eda" in runs and "none_same_steps" in runs:
        result["gain_over_same_steps"] = round(runs["eda"]["mean"] - runs["none_same_steps"]["mean"], 4)
    return result


# ------------------------------------------------------------------------------------------ dedupe


def planted(seed: int = 0, copies: int = 200) -> tuple[list[str], list[tuple[int, int]]]:
    """Shakespeare in passages of 6 lines (those over 200 characters), and `copies` near-copies of random
    ones: 1 to 12 words each replaced by another word of the text. Returns (documents, (original, copy) pairs)."""
    from lmforge.data.corpora import load_corpus

    rng = random.Random(seed)
    lines = [x for play in load_corpus("shakespeare").documents for x in play.splitlines() if x.strip()]
    docs = [d for d in ("\n".join(lines[i:i + 6]) for i in range(0, len(lines), 6)) if len(d) > 200]  # 6-line passages
    vocab = " ".join(docs[:200]).split()
    n0, pairs = len(docs), []
    for _ in range(copies):
        i = rng.randrange(n0)
        words = docs[i].split()
        for _ in range(rng.randint(1, 12)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        pairs.append((i, len(docs)))
        docs.append(" ".join(words))
    return docs, pairs


def bench_dedupe(args) -> dict:
    from lmforge.data.dedupe import jaccard, near_duplicate_pairs, shingles

    docs, plants = planted()
    threshold = 0.8
    sets = [shingles(d) for d in docs]
    above = {p for p in plants if jaccard(sets[p[0]], sets[p[1]]) >= threshold}
    t0 = time.perf_counter()
    ours = {(i, j) for i, j, _ in near_duplicate_pairs(docs, threshold)}
    row = {"documents": len(docs), "planted": len(plants), "planted_over_threshold": len(above),
           "threshold": threshold, "lmforge": _pr(ours, above, sets, threshold, time.perf_counter() - t0)}
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        row["datasketch"] = {"ran": False, "why": "datasketch is not installed (pip install datasketch)"}
        return row
    t0 = time.perf_counter()
    lsh, hashes = MinHashLSH(threshold=threshold, num_perm=128), []
    for i, s in enumerate(sets):
        m = MinHash(num_perm=128)
        m.update_batch([x.to_bytes(8, "little", signed=True) for x in s])
        hashes.append(m)
        lsh.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i
              and jaccard(sets[i], sets[j]) >= threshold}
    row["datasketch"] = _pr(theirs, above, sets, threshold, time.perf_counter() - t0)
    return row


def _pr(found: set, planted_pairs: set, sets, threshold: float, seconds: float) -> dict:
    """Recall of the planted pairs over the threshold; precision of the pairs found (a pair is right
    when its exact Jaccard is over the threshold, planted or a real near-copy in the plays)."""
    from lmforge.data.dedupe import jaccard

    real = sum(1 for i, j in found if jaccard(sets[i], sets[j]) >= threshold)
    return {"pairs": len(found), "recall": round(len(found & planted_pairs) / max(1, len(planted_pairs)), 4),
            "precision": round(real / max(1, len(found)), 4), "seconds": round(seconds, 2)}


# ------------------------------------------------------------------------------------------ word2vec

PROBES = {"shakespeare": ["king", "love", "night", "sword", "daughter"],
          "bbc-news": ["economy", "film", "government", "music", "football"],
          "peoples-daily": ["中国", "经济", "人民", "北京", "发展"]}


def bench_word2vec(args) -> dict:
    import importlib.util

    from lmforge.data.corpora import load_corpus
    from lmforge.embed import Word2VecConfig, WordVectors, corpus_words, train_word2vec

    out = {}
    backends = ["torch"] + (["gensim"] if importlib.util.find_spec("gensim") else [])
    for name, probes in PROBES.items():
        docs = corpus_words(load_corpus(name).documents)
        if args.quick:
            docs = docs[: max(1, len(docs) // 10)]
        row: dict = {"tokens": sum(len(d) for d in docs)}
        for backend in backends:
            cfg = Word2VecConfig(epochs=1 if args.quick else 5, backend=backend)
            words, vectors, report = train_word2vec(docs, cfg, log=log)
            wv = WordVectors(words, vectors)
            row[backend] = {"seconds": report["seconds"], "words": report["words"],
                            "neighbours": {w: [x for x, _ in wv.similar(w, 5)] for w in probes if w in wv.index}}
            if name != "peoples-daily":
                row[backend]["wordsim353"] = wordsim(wv)
        if "gensim" in row:
            row["torch_over_gensim_seconds"] = round(row["torch"]["seconds"] / max(0.1, row["gensim"]["seconds"]), 2)
        out[name] = row
    return out


def wordsim(wv) -> dict | None:
    """Spearman's rho between cosine and WordSim-353's human scores over the pairs both words of
    which the vectors know (gensim ships the file), or None without gensim."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("gensim")
    if spec is None:
        return None
    path = Path(spec.origin).parent / "test" / "test_data" / "wordsim353.tsv"
    human, model = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or line.startswith("#"):
            continue
        a, b, score = parts[0].lower(), parts[1].lower(), float(parts[2])
        if a in wv.index and b in wv.index:
            human.append(score)
            model.append(float(wv.vector(a) @ wv.vector(b)))
    if len(human) < 10:
        return {"pairs": len(human)}
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    rho = float(np.corrcoef(rank(human), rank(model))[0, 1])
    return {"pairs": len(human), "spearman": round(rho, 4)}


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="small sizes: checks that every section runs")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    ap.add_argument("--arms", default="none,eda,none_same_steps",
                    help="eda: which arms to run (the same seeds give the same figures run alone)")
    ap.add_argument("--work", type=Path, help="folder for runs and files (default: a temporary one)")
    args = ap.parse_args(argv)
    from bench.classify import machine

    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        out = {"bench": "data", "date": time.strftime("%Y-%m-%d"), "machine": machine(), "quick": args.quick}
        for s in chosen:
            t0 = time.perf_counter()
            log(f"== {s}")
            out[s] = globals()[f"bench_{s}"](args)
            out[s]["section_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, ensure_ascii=False, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

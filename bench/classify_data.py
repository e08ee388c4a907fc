"""The data of `python -m bench.classify`: each corpus written as a `text,label` CSV, and its
fixed split, recomputed the way `lmforge finetune` computes it (the two must agree).
"""

from __future__ import annotations

import csv
import shutil
import sys
from collections import Counter
from pathlib import Path

SPLIT = (0.8, 0.1, 0.1)  # train, validation, test: lmforge finetune's defaults (checked below)
DATASETS = {"bbc": "bbc-news", "zh": "chinese-reviews"}
QUICK_ROWS = {"bbc": 250, "zh": 400}  # --quick: a stratified subset of each corpus, in corpus order


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def _stratified_subset(labels: list[str], n: int) -> list[int]:
    """About n row indices with every label in its corpus share, in corpus order (--quick only)."""
    counts = Counter(labels)
    want = {lab: max(2, round(n * c / len(labels))) for lab, c in counts.items()}
    taken: Counter = Counter()
    keep = []
    for i, lab in enumerate(labels):
        if taken[lab] < want[lab]:
            taken[lab] += 1
            keep.append(i)
    return keep


def _as_list(idx) -> list[int]:
    return [int(i) for i in idx]


def prepare(key: str, args) -> dict:
    """Load a corpus, write it as WORK/<key>.csv, and fix its split; the split is recomputed from the
    CSV exactly as `lmforge finetune` computes it, and must be identical."""
    from lmforge.data.corpora import load_corpus
    from lmforge.evaluate.classification import majority_baseline
    from lmforge.evaluate.crossval import stratified_split

    name = DATASETS[key]
    corpus = load_corpus(name)
    if not corpus.labels:
        raise RuntimeError(f"corpus '{name}' has no labels")
    docs, labels = list(corpus.documents), [str(x) for x in corpus.labels]
    n_corpus = len(docs)
    subset = getattr(args, "rows", None) or (QUICK_ROWS[key] if args.quick else None)  # --rows: bench.finetune
    if subset and subset < len(docs):
        keep = _stratified_subset(labels, subset)
        docs, labels = [docs[i] for i in keep], [labels[i] for i in keep]
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"{key}.csv"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(docs, labels))
    tmp.replace(path)

    train, val, test = (_as_list(s) for s in stratified_split(labels, SPLIT, seed=args.seed))
    check = _finetune_split(path, args.seed)
    same_rows = check.pop("texts") == docs and check["labels"] == labels
    same_split = check.pop("split") == [train, val, test]
    check.pop("labels")
    if not (same_rows and same_split):
        raise RuntimeError(f"{path}: the CSV read back as lmforge finetune reads it "
                           f"{'gives a different split' if same_rows else 'differs from the corpus'}; "
                           "the bench and fine-tuning would not score the same test rows")
    test_set = set(docs[i] for i in test)
    leaked = sum(1 for i in train if docs[i] in test_set)  # exact duplicates across the split
    majority = majority_baseline([labels[i] for i in train], [labels[i] for i in test])
    return {
        "corpus": name, "csv": str(path), "rows": len(docs), "corpus_rows": n_corpus,
        "labels": dict(sorted(Counter(labels).items())),
        "split": {"fractions": list(SPLIT), "seed": args.seed, "train": len(train), "validation": len(val),
                  "test": len(test), "identical_to_finetune": True, **check},
        "train_rows_duplicating_a_test_text": leaked, "majority_baseline": majority,
        "_docs": docs, "_labels": labels, "_split": (train, val, test),
    }


def _finetune_split(path: Path, seed: int) -> dict:
    """The rows and split `lmforge finetune --data path --seed seed` uses (its reader, its fractions)."""
    from lmforge.evaluate.crossval import stratified_split

    try:
        from lmforge.tasks.classify import Classification
        from lmforge.train.finetune import finetune_recipe
    except ImportError as e:  # fine-tuning not importable here: read the CSV as it would
        from lmforge.data.corpora import load_corpus

        c = load_corpus(str(path), column="text", label_column="label")
        rows, val, test = {"text": c.documents, "label": c.labels}, 0.1, 0.1
        how = f"load_corpus (lmforge.train.finetune not importable: {e})"
    else:
        task = finetune_recipe(None, {"seed": seed, "data": str(path)}).task
        read = Classification.read(str(path), task)
        rows, val, test = {"text": read["text_column"], "label": read["label_column"]}, task.val_fraction, task.test_fraction
        how = "lmforge.tasks.classify.Classification.read + the finetune recipe's defaults"
    fractions = (1 - val - test, val, test)  # as finetune() writes it
    split = [_as_list(s) for s in stratified_split(rows["label"], fractions, seed=seed)]
    return {"texts": rows["text"], "labels": rows["label"], "split": split, "recomputed_with": how}


def write_pretrain_text(data: dict, folder: Path) -> Path:
    """The TRAINING articles only, one .txt per article (document boundaries for next-sentence pairs)."""
    if folder.exists():
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    train = data["_split"][0]
    for i in train:
        (tmp / f"{i:05d}.txt").write_text(data["_docs"][i], encoding="utf-8")
    tmp.replace(folder)
    test_texts = {data["_docs"][i] for i in data["_split"][2]}
    written = {data["_docs"][i] for i in train}
    data["pretrain_text"] = {"folder": str(folder), "documents": len(train),
                             "test_texts_in_it": len(test_texts & written)}
    return folder

"""The TF-IDF + logistic-regression baseline of `python -m bench.classify` (scikit-learn, the
`bench` extra): features fitted on the training split, C picked on validation, the test split
scored once.
"""

from __future__ import annotations

import importlib.util
import time

from bench.classify_data import log

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)  # inverse regularisation of the logistic regression


def _sklearn():
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise SystemExit('the TF-IDF baseline needs scikit-learn: pip install "lmforge[bench]" '
                         '(or pip install scikit-learn), or leave it out with --only') from None
    return TfidfVectorizer, LogisticRegression


def tfidf_features(key: str) -> dict:
    """The featurisations tried for a data set: name -> TfidfVectorizer keyword arguments."""
    if key == "bbc":
        return {"word_1-2gram": dict(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2)}
    out = {"char_1-3gram": dict(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)}
    if importlib.util.find_spec("jieba") is not None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        out["jieba_word_1-2gram"] = dict(tokenizer=jieba.lcut, token_pattern=None, lowercase=False,
                                         ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    return out


def tfidf(data: dict, key: str) -> dict:
    """Fit TF-IDF on the training split, pick C on validation, score the test split once."""
    from lmforge.evaluate.classification import classification_report

    TfidfVectorizer, LogisticRegression = _sklearn()
    docs, labels = data["_docs"], data["_labels"]
    train, val, test = data["_split"]
    names = sorted(set(labels))
    pick = lambda idx, seq: [seq[i] for i in idx]  # noqa: E731
    y_tr, y_va, y_te = pick(train, labels), pick(val, labels), pick(test, labels)
    out = {"features": {}}
    if importlib.util.find_spec("jieba") is None and key == "zh":
        out["skipped"] = {"jieba_word_1-2gram": "jieba is not installed (pip install jieba)"}
    for feat, kw in tfidf_features(key).items():
        t0 = time.perf_counter()
        vec = TfidfVectorizer(**kw)
        x_tr = vec.fit_transform(pick(train, docs))  # vocabulary and idf from the training split only
        x_va, x_te = vec.transform(pick(val, docs)), vec.transform(pick(test, docs))
        val_acc, models = {}, {}
        for c in C_GRID:
            m = LogisticRegression(C=c, max_iter=3000)
            m.fit(x_tr, y_tr)
            models[c] = m
            val_acc[c] = sum(p == y for p, y in zip(m.predict(x_va), y_va)) / len(y_va)
        best = max(C_GRID, key=lambda c: (val_acc[c], -c))  # ties: the stronger regularisation
        pred = [str(p) for p in models[best].predict(x_te)]  # the one look at the test split
        rep = classification_report(y_te, pred, labels=names)
        out["features"][feat] = {
            "accuracy": rep["accuracy"], "f1_macro": rep["macro"]["f1"], "C": best,
            "validation_accuracy_by_C": {str(c): round(a, 4) for c, a in val_acc.items()},
            "n_features": len(vec.vocabulary_), "seconds": round(time.perf_counter() - t0, 1),
            "report": rep,
        }
        log(f"[tfidf {key}] {feat}: C={best} (val {val_acc[best]:.4f}), test accuracy {rep['accuracy']:.4f}, "
            f"macro F1 {rep['macro']['f1']:.4f} ({len(vec.vocabulary_):,} features, "
            f"{time.perf_counter() - t0:.0f} s)")
    first = next(iter(out["features"].values()))
    out["accuracy"], out["f1_macro"] = first["accuracy"], first["f1_macro"]  # the row's headline figure
    out["headline"] = next(iter(out["features"]))
    return out

"""`lmforge predict RUN --file F`: a fine-tuned run applied to new rows, written as JSON lines.

RUN is an lmforge fine-tuning run or a Hugging Face directory of a fine-tuned BERT (a classifier's
class names come from its config.json id2label). What a line holds depends on the run's task:
    classify  {"text", "label", "probabilities"}          (a .csv, .tsv or .jsonl file of texts, or a
                                                           .txt file: one document)
    token     {"tokens", "tags"[, "entities"]}             (a .jsonl file of word lists)
    qa        {"question", "answer"}                       (rows with a question and a context)

The columns are the ones the run was fine-tuned with (its finetune.json; the defaults for a Hugging
Face directory), unless given. When the file also holds the gold labels, tags or answers, the
evaluation report comes back too, computed as fine-tuning computes it on its test split; rows whose
gold label the run does not know (or is empty) still get their prediction and are left out of the
report, which names them under "unscored".
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.data.corpora import load_corpus
from lmforge.data.labelled import COLUMNAR, answer_span, encode_qa, encode_tagged, encode_texts, read_tagged
from lmforge.errors import LmforgeError
from lmforge.evaluate.classification import classification_report
from lmforge.evaluate.entities import entity_report, entity_spans, is_chunk_tagset
from lmforge.evaluate.qa import qa_scores
from lmforge.checkpoint import load_pretrained
from lmforge.train.finetune import FinetuneConfig, row_length
from lmforge.train.inference import answer_spans, padding_id, predict_probs, tag_words


def _column(data: str, column: str, required: bool = True) -> list[str] | None:
    """One column of a rows file, or None when it is absent and not required (a plain text file
    is one document: its text, and no other column)."""
    if not required and Path(data).suffix.lower() not in COLUMNAR:
        return None
    try:
        return load_corpus(data, column=column).documents
    except LmforgeError:
        if required:
            raise
        return None


def _classify(model, tokenizer, data, cfg: FinetuneConfig, pad, truncation, log):
    labels = model.config.labels
    texts = _column(data, cfg.text_column)
    pairs = _column(data, cfg.text_pair_column) if cfg.text_pair_column else None
    gold = _column(data, cfg.label_column, required=False)
    max_len = row_length(model, cfg)
    ex = encode_texts(tokenizer, texts, max_len, not model.config.causal, pairs, truncation)
    if ex.truncated:
        log(f"warning: {ex.truncated} rows are longer than {max_len} tokens and were cut at the end")
    probs, _ = predict_probs(model, ex, pad)
    chosen = [labels[int(p.argmax())] for p in probs]
    lines = [{"text": t[:200], "label": c, "probabilities": {name: round(float(v), 6) for name, v in zip(labels, p)}}
             for t, c, p in zip(texts, chosen, probs)]
    return lines, (_scored(gold, chosen, labels, log) if gold is not None else None)


def _scored(gold: list[str], chosen: list[str], labels: list[str], log) -> dict | None:
    """The report over the rows whose gold label is one of the run's classes; the others (a label
    the run never saw, or an empty cell) are named in a warning and under "unscored"."""
    known = [i for i, g in enumerate(gold) if g in labels]
    unknown = sorted({g for g in gold if g not in labels})
    if unknown:
        names = ", ".join(repr(g) if g.strip() else "an empty cell" for g in unknown[:5])
        log(f"warning: {len(gold) - len(known)} rows have a gold label the run was not trained on ({names}"
            f"{', ...' if len(unknown) > 5 else ''}; it knows {', '.join(labels[:8])}), so the report scores "
            f"only the other {len(known)} rows")
    if not known:
        return None
    report = classification_report([gold[i] for i in known], [chosen[i] for i in known], labels=labels)
    if unknown:
        report["unscored"] = {"rows": len(gold) - len(known), "labels": unknown}
    return report


def _tag(model, tokenizer, data, cfg: FinetuneConfig, pad, truncation, log):
    labels = model.config.labels
    words, gold = read_tagged(data, cfg.tokens_column, cfg.tags_column, need_tags=False)
    ids = {t: i for i, t in enumerate(labels)}
    if gold is not None and any(t not in ids for row in gold for t in row):
        unknown = next(t for row in gold for t in row if t not in ids)
        raise LmforgeError(f"tag {unknown!r} in {data} is not one the run was trained on ({', '.join(labels[:8])}); "
                           "fix the file or drop its tags to predict only")
    max_len = row_length(model, cfg)
    ex = encode_tagged(tokenizer, words, [[0] * len(w) for w in words], max_len, not model.config.causal, truncation)
    if ex.truncated:
        log(f"warning: {ex.truncated} rows are longer than {max_len} tokens; their last words get no tag (null)")
    pred, _, _ = tag_words(model, ex, pad)
    tags = [[None] * len(w) for w in words]  # a word cut away (or with no token of its own) gets no tag
    for row, at, p in zip(tags, ex.words, pred):
        for word, t in zip(at, p):
            row[word] = labels[t]
    chunks = is_chunk_tagset(labels)
    lines = []
    for w, t in zip(words, tags):
        line = {"tokens": w, "tags": t}
        if chunks:
            spans = sorted(entity_spans([x or "O" for x in t]), key=lambda e: e[1])
            line["entities"] = [{"type": ty, "start": a, "end": b, "text": " ".join(w[a:b + 1])} for ty, a, b in spans]
        lines.append(line)
    report = None
    if gold is not None:
        scored = [([g[w] for w in at], [labels[x] for x in p]) for g, at, p in zip(gold, ex.words, pred)]
        report = classification_report([x for g, _ in scored for x in g], [x for _, p in scored for x in p], labels)
        if chunks:
            report["entities"] = entity_report([g for g, _ in scored], [p for _, p in scored])
    return lines, report


def _answer(model, tokenizer, data, cfg: FinetuneConfig, pad, truncation, log):
    questions, contexts = _column(data, cfg.question_column), _column(data, cfg.context_column)
    gold = _column(data, cfg.answer_column, required=False)
    if gold is not None:
        for i, (c, a) in enumerate(zip(contexts, gold)):
            answer_span(c, a, i)
    ex, offsets = encode_qa(tokenizer, questions, contexts, gold, row_length(model, cfg), truncation, cfg.doc_stride)
    if ex.truncated:
        log(f"warning: {ex.truncated} rows have a question cut to half the row or an answer no window holds whole")
    answers, _ = answer_spans(model, ex, contexts, offsets, pad)
    lines = [{"question": q, "answer": a} for q, a in zip(questions, answers)]
    return lines, (qa_scores(answers, [[g] for g in gold]) if gold is not None else None)


TASKS = {"classify": _classify, "token": _tag, "qa": _answer}


def predict_file(run: str | Path, data: str, out: str | Path | None = None, text_column: str | None = None,
                 truncation: str = "warn", log=print) -> tuple[Path, dict | None]:
    """Predictions of the fine-tuned `run` for every row of `data`, written as JSON lines to `out`
    (default: DATA with the suffix .predictions.jsonl); and the report when the file has gold."""
    model, tokenizer = load_pretrained(run)  # a Hugging Face classifier, tagger or reader works too
    task = model.config.head
    if task not in TASKS:
        raise LmforgeError(f"{run} is not a fine-tuned model (it has no classification, tagging or QA head); "
                           "fine-tune one with `lmforge finetune` and give that run")
    saved_file = Path(run) / "finetune.json"
    saved = json.loads(saved_file.read_text(encoding="utf-8")) if saved_file.is_file() else {}
    cfg = FinetuneConfig(**{**saved.get("config", {}), "task": task, "progress": False})
    if text_column:
        cfg.text_column = text_column
    pad = padding_id(tokenizer)
    lines, report = TASKS[task](model, tokenizer, data, cfg, pad, truncation, log)
    out = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    tmp.replace(out)
    return out, report

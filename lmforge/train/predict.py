"""`lmforge predict RUN --file F`: a fine-tuned run applied to new rows, written as JSON lines.

RUN is an lmforge fine-tuning run or a Hugging Face directory of a fine-tuned BERT (a classifier's
class names come from its config.json id2label). What a line holds depends on the run's task
(lmforge/tasks/: classify.py, token.py, qa.py, each with its `predict`):
    classify  {"text", "label", "probabilities"}          (a .csv, .tsv or .jsonl file of texts, or a
                                                           .txt file: one document)
    token     {"tokens", "tags"[, "entities"]}             (a .jsonl file of word lists)
    qa        {"question", "answer"}                       (rows with a question and a context)
    translate {"source", "output"[, "reference"]}          (rows with the source column, or a .txt file:
    summarize                                               one source a line; beam search as validated)

The columns are the ones the run was fine-tuned with (the task: section of its recipe.yaml, or the
finetune.json of a run from an earlier version; the defaults for a Hugging Face directory), unless
given. When the file also holds the gold labels, tags or answers, the evaluation report comes back
too, computed as fine-tuning computes it on its test split; rows whose gold label the run does not
know (or is empty) still get their prediction and are left out of the report, which names them
under "unscored".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


from lmforge.config import TaskConfig, TrainConfig
from lmforge.errors import LmforgeError
from lmforge.evaluate.drift import THRESHOLD, drift_line
from lmforge.io import atomic_write
from lmforge.tasks import GENERATIVE, KINDS, task_class
from lmforge.tasks.saved import saved_task
from lmforge.tasks.base import padding_id
from lmforge.checkpoint import load_pretrained


def run_task(run: str | Path, model) -> TaskConfig:
    """The task settings `run` was fine-tuned with, its kind that of the model: its head, or for an
    encoder-decoder (which has none) the run's translate or summarize (translate by default)."""
    saved = saved_task(run)
    known = {f.name for f in dataclasses.fields(TaskConfig)}
    kind = model.config.head
    if model.config.family == "seq2seq":
        kind = saved.get("kind") if saved.get("kind") in GENERATIVE else "translate"
    return dataclasses.replace(TaskConfig(**{k: v for k, v in saved.items() if k in known}), kind=kind)


def predict_file(run: str | Path, data: str, out: str | Path | None = None, text_column: str | None = None,
                 truncation: str = "warn", log=print, psi_threshold: float = THRESHOLD) -> tuple[Path, dict | None]:
    """Predictions of the fine-tuned `run` for every row of `data`, written as JSON lines to `out`
    (default: DATA with the suffix .predictions.jsonl); and the report when the file has gold. A
    classifier's report also has "drift": the PSI of its predicted labels against those on the run's
    validation split (evaluate/drift.py), shifted when above psi_threshold."""
    if not psi_threshold > 0:
        raise LmforgeError(f"--psi-threshold {psi_threshold} cannot be used; give a number above 0, e.g. 0.25")
    model, tokenizer = load_pretrained(run)  # a Hugging Face classifier, tagger, reader or translator works too
    cfg = run_task(run, model)
    if cfg.kind not in KINDS:
        raise LmforgeError(f"{run} is not a fine-tuned model (it has no classification, tagging or QA head); "
                           "fine-tune one with `lmforge finetune` and give that run")
    kind = cfg.kind
    cfg = dataclasses.replace(cfg, truncation=truncation, text_column=text_column or cfg.text_column)
    if kind in GENERATIVE and text_column:
        cfg = dataclasses.replace(cfg, source_column=text_column)
    context = model.config.context_length
    max_len = context if cfg.max_length is None else min(cfg.max_length, context)
    try:
        lines, report = task_class(kind).predict(model, tokenizer, str(data), cfg, max_len, padding_id(tokenizer), log)
    except LmforgeError as e:
        if e.field == "column" and e.value in (cfg.text_column, cfg.source_column):
            raise e.about("text_column") from None  # the one column predict takes as an argument
        if e.field in ("column", "label_column"):  # a column the run was fine-tuned on
            raise LmforgeError(f"{data} has no column or field {e.value!r}, which the run was fine-tuned on; give "
                               "the file that column") from None
        raise
    if kind == "classify":
        drift = drift_line(run, [line["label"] for line in lines], model.config.labels, psi_threshold)
        if drift is not None:
            report = {**(report or {}), "drift": drift}
    out = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    atomic_write(out, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return out, report


def translate_texts(run: str | Path, texts: list[str], num_beams: int | None = None, log=print) -> list[str]:
    """`lmforge translate RUN "text"`: the outputs of an encoder-decoder run (translation or summary) for
    `texts`, decoded with the beam settings it was validated with (num_beams overrides the width)."""
    model, tokenizer = load_pretrained(run)
    if model.config.family != "seq2seq":
        raise LmforgeError(f"{run} is a {model.config.family} model, which does not translate; give an "
                           "encoder-decoder run (`lmforge finetune t5-mini --task translate ...`)")
    cfg = run_task(run, model)
    if num_beams is not None:
        if num_beams < 1:
            raise LmforgeError("{setting} cannot be used; give 1 (greedy) or more", "num_beams", num_beams)
        cfg.num_beams = num_beams
    for i, text in enumerate(texts):
        if not text.strip():
            raise LmforgeError(f"text {i + 1} is empty; give something to translate")
    task = task_class(cfg.kind)(cfg, TrainConfig(), tokenizer, model.config, log)
    enc = task.encode(texts)
    note = task.truncation_note(enc, len(texts))
    if note:
        log(note)
    return task.generate(model, enc.src)


def round_trip(via: str, log=print):
    """--via THERE[,BACK] (augmentation's backtranslate) -> a function from texts to their round trip
    through the two translation runs (or their translation by one)."""
    runs = [r.strip() for r in via.split(",") if r.strip()]
    if not 1 <= len(runs) <= 2:
        raise LmforgeError(f"--via {via} is not one or two runs; give THERE,BACK (two lmforge translation runs)")

    def translate(texts: list[str]) -> list[str]:
        for run in runs:
            texts = translate_texts(run, texts, log=log)
        return texts
    return translate


ENTITY_KINDS = {"PERSON": "person", "PER": "person", "ADDRESS": "address", "ADDR": "address"}


def entity_tagger(run: str | Path, batch_size: int = 64):
    """`lmforge data anonymize --tagger RUN`: a function from texts to the person and address spans
    (kind, start, end) that the token-classification `run` tags (BIO / IOBES tags PERSON or PER,
    ADDRESS or ADDR). A text is cut into its words as data/pii.py cuts them, in pieces that fit the
    model's context; each entity's span runs from its first word's start to its last word's end."""
    from lmforge.data.labelled import encode_tagged
    from lmforge.data.pii import words_with_offsets
    from lmforge.evaluate.entities import entity_spans, is_chunk_tagset, split_tag
    from lmforge.tasks.token import tag_words

    model, tokenizer = load_pretrained(run)
    labels = list(model.config.labels or [])
    if model.config.head != "token" or not is_chunk_tagset(labels):
        raise LmforgeError(f"{run} is not an entity tagger (a token-classification run with B-/I- tags); fine-tune one "
                           "with `lmforge finetune BASE --task token --data pii.jsonl` on `lmforge data pii-examples`")
    if not {split_tag(t)[1] for t in labels} & set(ENTITY_KINDS):
        raise LmforgeError(f"{run} tags {', '.join(sorted({split_tag(t)[1] for t in labels} - {''}))}, none of them "
                           "PERSON or ADDRESS; give a tagger trained on `lmforge data pii-examples`")
    context = model.config.context_length
    piece = max(4, (context - 2) // 3)  # words per piece: room for words of up to three tokens
    pad = padding_id(tokenizer)

    def tag(texts: list[str]) -> list[list[tuple[str, int, int]]]:
        pieces = [(i, ws[a:a + piece]) for i, t in enumerate(texts) for ws in [words_with_offsets(t)]
                  for a in range(0, len(ws), piece)]
        out: list[list[tuple[str, int, int]]] = [[] for _ in texts]
        if not pieces:
            return out
        words = [[w for w, _, _ in p] for _, p in pieces]
        ex = encode_tagged(tokenizer, words, [[0] * len(w) for w in words], context, not model.config.causal)
        pred, _, _ = tag_words(model, ex, pad, batch_size=batch_size)
        for (i, p), at, guess in zip(pieces, ex.words, pred):
            tags = ["O"] * len(p)
            for word, t in zip(at, guess):
                tags[word] = labels[t]
            for kind, a, b in sorted(entity_spans(tags), key=lambda e: e[1]):
                if kind in ENTITY_KINDS:
                    out[i].append((ENTITY_KINDS[kind], p[a][1], p[b][2]))
        return out
    return tag

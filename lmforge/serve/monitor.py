"""Watching served models: a canary set scored at every load, and the drift of a classifier's predictions.

Canary (`lmforge serve --canary [NAME=]FILE`): a labelled file scored when a model's weights are
loaded (start-up, every reload): a classifier's accuracy on its rows (the run's text and label
columns), a decoder's perplexity on its texts (the text column; each text's tokens and an end token).
Exported as the gauges lmforge_canary_accuracy / lmforge_canary_perplexity; a reload that makes the
number worse is seen there at once.

Drift (`POST /v1/classify`): the labels a classifier predicts are counted; over the last `window`
predictions, their distribution against the one the model predicted on its own validation split
is the population stability index (evaluate/drift.py), exported as lmforge_prediction_psi. Past
`threshold` a warning is logged, once each time it crosses, when the window holds at least
MIN_ROWS predictions (fewer say little about a distribution), or the whole window when it is smaller.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.evaluate.drift import THRESHOLD, psi, reference_counts
from lmforge.serve.errors import ServeError

MIN_ROWS = 50  # predictions in the window before a warning can be logged
MAX_TEXTS = 2048  # texts in one /v1/classify request


def parse_canaries(specs: list[str], names: list[str]) -> dict[str, Path]:
    """--canary FILE (every model) or NAME=FILE (that one) -> model name -> file."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, _, file = spec.partition("=") if "=" in spec and not Path(spec).is_file() else ("", "", spec)
        if name and name not in names:
            raise LmforgeError(f"--canary {spec} names the model {name!r}, which this server does not serve; it serves "
                               f"{', '.join(names)}")
        path = Path(file)
        if not path.is_file():
            raise LmforgeError(f"the canary file {file} does not exist; give a labelled .tsv, .csv or .jsonl file")
        for n in ([name] if name else names):
            out[n] = path
    return out


def task_columns(run: Path | None) -> tuple[str, str, str | None]:
    """The text, label and (when it has one) text-pair columns a run was fine-tuned with (text and
    label when it says none)."""
    from lmforge.tasks.saved import saved_task

    saved = saved_task(run) if run is not None else {}
    return saved.get("text_column") or "text", saved.get("label_column") or "label", saved.get("text_pair_column")


def canary_accuracy(lm, path: Path, max_len: int, log=print) -> dict:
    """A classifier's accuracy on the rows of `path` whose label it knows (the others are named in a warning)."""
    from lmforge.tasks.base import padding_id
    from lmforge.tasks.classify import classify_texts, column, scored_rows

    text_col, label_col, pair_col = task_columns(lm.path)
    texts, gold = column(str(path), text_col), column(str(path), label_col)
    labels = list(lm.config.labels)
    if not set(gold) & set(labels):
        raise LmforgeError(f"no row of the canary file {path} has a label the model knows ({', '.join(labels[:8])}); "
                           f"give rows labelled with those in its {label_col!r} column")
    pairs = column(str(path), pair_col) if pair_col else None
    chosen, _ = classify_texts(lm.model, lm.tokenizer, texts, max_len, padding_id(lm.tokenizer), pairs,
                               log=lambda *_: None)
    report = scored_rows(gold, chosen, labels, lambda line: log(f"canary {path.name}: {line}"))
    return {"accuracy": float(report["accuracy"]), "rows": len(gold) - report.get("unscored", {}).get("rows", 0)}


def canary_perplexity(lm, path: Path) -> dict:
    """A decoder's perplexity on the texts of `path`: exp(mean negative log-likelihood per predicted token)."""
    from lmforge.data.corpora import load_corpus

    text_col = task_columns(lm.path)[0]
    corpus = load_corpus(str(path), column=text_col if path.suffix.lower() != ".txt" else None)
    context, total, n = lm.config.context_length, 0.0, 0
    with torch.no_grad():
        for text in corpus.documents:
            ids = (lm.encode_prompt(text) + list(lm.end_ids[:1]))[:context]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids], device=lm.device)
            logits = lm.model(x[:, :-1]).float()
            total += torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            n += len(ids) - 1
    if n == 0:
        raise LmforgeError(f"the canary file {path} has no text of two tokens or more; give texts to score")
    return {"perplexity": math.exp(total / n), "tokens": n, "rows": len(corpus.documents)}


class Drift:
    """The recent predicted labels of one classifier, and their PSI against its validation split's."""

    def __init__(self, reference: dict[str, int] | None, labels: list[str], window: int):
        self.reference, self.labels = reference, labels
        self.recent: deque[str] = deque(maxlen=window)
        self.warned = False

    def add(self, predicted: list[str]) -> float | None:
        self.recent.extend(predicted)
        if self.reference is None:
            return None
        return psi(self.reference, Counter(self.recent), self.labels)


class Monitor:
    """What lmforge serve watches besides traffic: canary sets (model name -> file) and the drift of
    classifiers' predictions (over the last `window` of them, warning above `threshold`)."""

    def __init__(self, canaries: dict[str, Path] | None = None, threshold: float = THRESHOLD, window: int = 1000,
                 log=print):
        self.canaries, self.threshold, self.window, self.log = canaries or {}, threshold, window, log
        self.drift: dict[str, Drift] = {}
        self.metrics = None  # the server's Metrics, set by the server

    def score(self, version) -> None:
        """Score the canary set of `version`'s model on it (before it serves)."""
        path = self.canaries.get(version.name)
        if path is None:
            return
        lm = version.lm
        if version.kind == "classify":
            version.canary = canary_accuracy(lm, path, version.max_len, self.log)
        else:
            version.canary = canary_perplexity(lm, path)
        number = next(iter(version.canary.items()))
        self.log(f"canary of {version.name!r} (step {version.step}): {number[0]} {number[1]:.4f} on {path.name}")

    def switched(self, version) -> None:
        """`version` now serves: its canary gauge, and a fresh drift window for a classifier."""
        m = version.hub.metrics
        if version.canary:
            gauge = m.canary_accuracy if "accuracy" in version.canary else m.canary_perplexity
            gauge.labels(version.name).set(next(iter(version.canary.values())))
        if version.kind == "classify":
            found = reference_counts(version.run) if version.run is not None else None
            self.drift[version.name] = Drift(found[0] if found else None, version.labels, self.window)
            if found is None:
                self.log(f"{version.name!r} has no report.json with its validation predictions (lmforge finetune "
                         "writes one), so the drift of its predictions is not measured")

    async def classify(self, version, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """Labels and probabilities for `texts` (and their `pairs`, for a model fine-tuned on text
        pairs), run together with the requests that arrive meanwhile, counted into the model's drift."""
        if not texts or len(texts) > MAX_TEXTS or any(not t.strip() for t in texts):
            raise ServeError(400, f"input takes 1 to {MAX_TEXTS} texts, none of them empty", param="input")
        check_pairs(version, texts, pairs)
        chosen, probs = await version.batcher(list(zip(texts, pairs or [None] * len(texts))))
        self._count(version, chosen)
        return [{"index": i, "label": c, "probabilities": {n: round(float(v), 6) for n, v in zip(version.labels, p)}}
                for i, (c, p) in enumerate(zip(chosen, probs))]

    def _count(self, version, chosen: list[str]) -> None:
        m = version.hub.metrics
        for label in chosen:
            m.predicted.labels(version.name, label).inc()
        drift = self.drift.get(version.name)
        value = drift.add(chosen) if drift is not None else None
        if value is None:
            return
        m.psi.labels(version.name).set(value)
        above = value > self.threshold and len(drift.recent) >= min(MIN_ROWS, drift.recent.maxlen)
        if above and not drift.warned:
            self.log(f"warning: the labels {version.name!r} predicts have shifted: PSI {value:.3f} over the last "
                     f"{len(drift.recent)} predictions against its validation split (threshold {self.threshold})")
        drift.warned = above


def check_pairs(version, texts: list[str], pairs: list[str] | None) -> None:
    """A pair classifier needs one second text per input; any other classifier takes none."""
    if version.pair_column and pairs is None:
        raise ServeError(400, f"the model {version.name!r} was fine-tuned on pairs of texts; send each input's second "
                              f"text (its {version.pair_column!r} column) in \"pair\"", param="pair")
    if not version.pair_column and pairs is not None:
        raise ServeError(400, f"the model {version.name!r} classifies single texts; leave \"pair\" out", param="pair")
    if pairs is not None and len(pairs) != len(texts):
        raise ServeError(400, f"\"pair\" holds {len(pairs)} texts for {len(texts)} inputs; give one per input",
                         param="pair")


class Batcher:
    """Texts of concurrent /v1/classify requests classified together: while one forward pass runs (on
    a worker thread), the requests that arrive wait, then go in one pass."""

    def __init__(self, classify):
        self.classify = classify  # items -> (labels, probabilities)
        self.queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, items: list):
        if self.queue is None:
            self.queue, self.loop = asyncio.Queue(), asyncio.get_running_loop()
            self.worker = asyncio.create_task(self._work())
        done = self.loop.create_future()
        await self.queue.put((items, done))
        return await done

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if any(item is None for item in batch):
                return
            flat = [item for items, _ in batch for item in items]
            try:
                chosen, probs = await asyncio.to_thread(self.classify, flat)
            except Exception as e:  # noqa: BLE001 - each request gets the failure
                for _, done in batch:
                    if not done.done():
                        done.set_exception(e)
                continue
            at = 0
            for items, done in batch:
                if not done.done():  # a client that went away has cancelled its future
                    done.set_result((chosen[at:at + len(items)], probs[at:at + len(items)]))
                at += len(items)

    def close(self) -> None:
        """End the worker (from any thread): the version is being let go."""
        if self.queue is not None and not self.loop.is_closed():  # a closed loop has ended the worker with it
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

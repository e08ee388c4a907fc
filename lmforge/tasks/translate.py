"""Translation: an encoder-decoder model learns to turn a source text into its target, and is scored
by what its beam search writes.

    rows:      (source, target) pairs: a built-in parallel corpus (bible, a --pair of languages) or two
               columns of a .csv, .tsv or .jsonl file
    batches:   sources (+ end token) padded on the right with a key mask; targets as labels (+ end
               token, IGNORE at padding) and the decoder's inputs, the labels shifted right
    loss:      cross-entropy with label smoothing (objectives/seq2seq.py)
    evaluate:  the teacher-forced loss on the validation split, and BLEU / chrF of beam-search outputs
               for its first task.val_rows rows: the headline (task.metric) picks the kept checkpoint
    test:      BLEU, chrF and ROUGE of the kept checkpoint on the test split, with bootstrap 95%
               intervals, beside the copy-the-source baseline

Summarisation (summarize.py) is the same task with other defaults, ROUGE-L as headline and lead-1
as baseline.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from lmforge.config import GenerateConfig, ModelConfig, TaskConfig, TrainConfig
from lmforge.data import IGNORE
from lmforge.data.batches import seq2seq_batch
from lmforge.data.labelled import ShuffledBatches, by_length
from lmforge.errors import LmforgeError
from lmforge.evaluate.decoding import ROWS, decode_rows
from lmforge.evaluate.text_report import text_report
from lmforge.objectives.seq2seq import seq2seq_loss
from lmforge.tasks.base import inference, padding_id


@dataclass
class Encoded:
    """Token ids of (source, target) pairs: each source ends with the end token; each target is the
    labels the decoder predicts, ending with it too. Targets are empty when there are no references."""

    src: list[list[int]]
    tgt: list[list[int]] = field(default_factory=list)
    truncated: int = 0  # sources cut to fit the encoder
    truncated_targets: int = 0  # targets cut to fit the decoder

    def __len__(self) -> int:
        return len(self.src)


class Translation:
    """Sequence-to-sequence fine-tuning; the Trainer's task (next_batch, loss, evaluate, headline)."""

    kind = "translate"
    higher_is_better = True
    baseline = "copy"  # what a model has to beat: the source copied as it is (evaluate/baselines.py)

    def __init__(self, cfg: TaskConfig, train: TrainConfig, tokenizer, model_config: ModelConfig, log=print):
        if model_config.family != "seq2seq":
            raise LmforgeError(f"a {model_config.family} model cannot {self.kind}: it has no "
                               f"{'decoder' if model_config.family != 'gpt' else 'encoder'}; fine-tune an "
                               "encoder-decoder model (an lmforge seq2seq run, a T5 / BART / Marian directory, or a "
                               "preset such as t5-mini)", "task.base")
        if tokenizer.eos_id is None:
            raise LmforgeError("the tokenizer has no end-of-text token, which ends every source and target; use the "
                               "tokenizer the model was trained with", "task.base")
        self.cfg, self.train_cfg, self.tokenizer, self.log = cfg, train, tokenizer, log
        self.data = SimpleNamespace(tokenizer=tokenizer)  # what the trainer saves beside the weights
        self.headline = cfg.metric
        context = model_config.context_length
        self.max_src = min(cfg.max_length or context, context)
        self.max_tgt = min(cfg.max_target_length or context - 1, context - 1)  # + the end token
        self.eos, self.pad, self.start = tokenizer.eos_id, padding_id(tokenizer), model_config.decoder_start_id
        self.train_data = self.val = None
        self.val_texts: tuple[list[str], list[str]] = ([], [])

    # ---------------------------------------------------------------------------------- rows -> batches
    def encode(self, sources: list[str], targets: list[str] | None = None) -> Encoded:
        """Token ids of each pair, cut to the encoder's and the decoder's room (`task.truncation`
        error refuses a long row instead, naming it)."""
        out = Encoded([])
        for i, ids in enumerate(self.tokenizer.encode_batch(sources)):
            out.src.append(ids[:self.max_src - 1] + [self.eos])
            out.truncated += self._cut(len(ids) + 1, self.max_src, i, "source", "max_length")
        for i, ids in enumerate(self.tokenizer.encode_batch(targets or [])):
            out.tgt.append(ids[:self.max_tgt] + [self.eos])
            out.truncated_targets += self._cut(len(ids), self.max_tgt, i, "target", "max_target_length")
        return out

    def _cut(self, length: int, room: int, row: int, what: str, key: str) -> bool:
        if length <= room:
            return False
        if self.cfg.truncation == "error":
            raise LmforgeError(f"row {row + 1}'s {what} is {length} tokens, more than the {room} that fit; shorten it, "
                               "raise {field}, or use --truncation warn to cut long rows", f"task.{key}")
        return True

    def truncation_note(self, enc: Encoded, n: int) -> str | None:
        parts = [f"{c} of {n} {what} longer than {room} tokens were cut at the end"
                 for c, what, room in ((enc.truncated, "sources", self.max_src),
                                       (enc.truncated_targets, "targets", self.max_tgt + 1)) if c]
        return f"warning: {'; '.join(parts)} (--truncation error refuses them instead)" if parts else None

    def batch(self, enc: Encoded, idx: list[int]) -> dict:
        """src (B, S) and src_mask (B, S), labels (B, T) with IGNORE at padding, tgt_in (B, T)."""
        return seq2seq_batch([enc.src[i] for i in idx], [enc.tgt[i] for i in idx] if enc.tgt else [], self.pad,
                             self.start)

    def fit_on(self, train: tuple[list[str], list[str]], val: tuple[list[str], list[str]]) -> Encoded:
        """Train on the (sources, targets) `train`, validate on `val`; returns the encoded training pairs."""
        self.train_data = self.encode(*train)
        self.val = self.encode(*val)
        self.val_texts = val
        lengths = [len(s) + len(t) for s, t in zip(self.train_data.src, self.train_data.tgt)]
        self.batches = ShuffledBatches(len(self.train_data), self.train_cfg.batch_size, self.train_cfg.seed, lengths)
        return self.train_data

    def next_batch(self) -> dict:
        return self.batch(self.train_data, self.batches.next_indices())

    def loss(self, model, batch: dict) -> torch.Tensor:
        return seq2seq_loss(model, batch, self.cfg.label_smoothing)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)

    # ---------------------------------------------------------------------------------- scoring
    def teacher_forced_loss(self, model, enc: Encoded, autocast=None, batch_size: int = 64) -> float:
        """Mean cross-entropy per target token, no smoothing: the model's own fit to the references."""
        total, count = 0.0, 0
        with inference(model) as device:
            for idx in by_length([len(t) for t in enc.tgt], batch_size):
                b = {k: v.to(device) for k, v in self.batch(enc, idx).items()}
                n = int((b["labels"] != IGNORE).sum())
                with (autocast or contextlib.nullcontext)():
                    total += float(seq2seq_loss(model, b)) * n
                count += n
        return total / max(1, count)

    def max_new_tokens(self, src: list[list[int]]) -> int:
        """Translation: a target rarely runs past twice its source (a cap that also ends the long
        outputs of a half-trained model quickly)."""
        return min(self.max_tgt + 1, 2 * max(map(len, src)) + 10)

    def generate(self, model, src: list[list[int]], autocast=None, batch_size: int = ROWS) -> list[str]:
        """Beam-search outputs (task.num_beams, length_penalty, no_repeat_ngram_size) as text, in row order."""
        def settings(rows: list[list[int]]) -> GenerateConfig:
            return GenerateConfig(max_new_tokens=self.max_new_tokens(rows), temperature=0.0,
                                  num_beams=self.cfg.num_beams, length_penalty=self.cfg.length_penalty,
                                  no_repeat_ngram_size=self.cfg.no_repeat_ngram_size, stop_ids=(self.eos,))

        with inference(model), (autocast or contextlib.nullcontext)():
            outs = decode_rows(model, src, settings, batch_size)
        return [self.tokenizer.decode(ids).strip() for ids in outs]

    def scores(self, hyps: list[str], refs: list[str], sources: list[str] | None = None, ci: bool = False) -> dict:
        """BLEU, chrF and ROUGE (evaluate/text_report.py); with `sources`, the baseline's beside them;
        with `ci`, bootstrap 95% intervals (1,000 resamples)."""
        lang = self.cfg.pair.split("-")[-1] if self.cfg.pair and "-" in self.cfg.pair else None
        return text_report(hyps, refs, sources=sources, baseline=self.baseline if sources is not None else None,
                           lang=lang, resamples=1000 if ci else 0, seed=self.train_cfg.seed)

    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        """The loss on every validation pair; BLEU / chrF / ROUGE-L on the first task.val_rows decoded,
        the same rows at every evaluation, the last (`full`) included: its headline is compared with the
        earlier ones to pick the kept checkpoint, and the test split is decoded whole once anyway."""
        n = min(len(self.val), self.cfg.val_rows)
        hyps = self.generate(model, self.val.src[:n], autocast)
        found = self.scores(hyps, self.val_texts[1][:n])
        return {"loss": self.teacher_forced_loss(model, self.val, autocast), **{k: found[k] for k in found
                if k in ("bleu", "chrf", "rougeL")}, "decoded_rows": n}

    def test(self, model, sources: list[str], targets: list[str], autocast=None) -> dict:
        """The test section of report.json (scores with intervals, the baseline's under "baseline"),
        and a few examples."""
        enc = self.encode(sources, targets)
        hyps = self.generate(model, enc.src, autocast)
        report = self.scores(hyps, targets, sources, ci=True)
        return {"test": {"loss": self.teacher_forced_loss(model, enc, autocast), **report},
                "baseline": report.pop("baseline"),
                "examples": [{"source": s, "reference": r, "output": h}
                             for s, r, h in list(zip(sources, targets, hyps))[:5]]}

    # ---------------------------------------------------------------------------------- new rows
    @classmethod
    def predict(cls, model, tokenizer, path: str, cfg: TaskConfig, max_len: int, pad_id: int, log
                ) -> tuple[list[dict], dict | None]:
        """Outputs for every source of a file: {"source", "output"[, "reference"]} per row, and the
        report when the file also holds references (task.target_column). A .txt file is one source a line."""
        sources, refs = read_sources(path, cfg)
        task = cls(cfg, TrainConfig(), tokenizer, model.config, log)
        enc = task.encode(sources)
        note = task.truncation_note(enc, len(sources))
        if note:
            log(note)
        hyps = task.generate(model, enc.src)
        lines = [{"source": s, "output": h, **({"reference": refs[i]} if refs else {})}
                 for i, (s, h) in enumerate(zip(sources, hyps))]
        return lines, (task.scores(hyps, refs, sources, ci=True) if refs else None)


def read_sources(path: str, cfg: TaskConfig) -> tuple[list[str], list[str] | None]:
    """The sources of a file to translate (its task.source_column, or one a line in a .txt file), and
    its references when it has the task.target_column."""
    from lmforge.tasks.classify import column

    if Path(path).suffix.lower() == ".txt":
        try:
            lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise LmforgeError(f"{path} cannot be read as UTF-8 text ({e.__class__.__name__}); give a UTF-8 file "
                               "with one source a line") from None
        sources = [line for line in lines if line]
        if not sources:
            raise LmforgeError(f"{path} has no text; give one source a line")
        return sources, None
    sources = column(path, cfg.source_column or "source")
    refs = column(path, cfg.target_column or "target", required=False)
    return sources, refs

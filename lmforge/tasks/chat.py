"""Chat fine-tuning: a causal model learns to answer as the assistant of real conversations.

    template:  a conversation becomes one text through a chat template (Jinja, stored in the run's
               tokenizer_config.json as Hugging Face stores it): the base model's own, or lmforge's,
               whose role tokens <|system|> <|user|> <|assistant|> <|end|> join the tokenizer as
               special tokens:   <|user|>\\nHi<|end|>\\n<|assistant|>\\nHello!<|end|>\\n
    labels:    the loss is on the assistant's words only, and on the end-of-turn after them (so the
               model learns to stop). An assistant message's span is what rendering the conversation
               through it adds to rendering it up to the assistant's prompt; a token whose text starts
               in a span is a label, every other position is IGNORE: the user's words carry no loss
    loss:      next-token cross-entropy over the labelled positions (objectives/clm.py)
    evaluate:  that loss on the validation conversations, and its perplexity; the loss is the
               headline (lower is better)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from lmforge.chat_jinja import render as render_jinja
from lmforge.config import TaskConfig, TrainConfig
from lmforge.data import IGNORE
from lmforge.data.labelled import ShuffledBatches, by_length
from lmforge.errors import LmforgeError
from lmforge.objectives.clm import clm_loss
from lmforge.tasks.base import inference, padding_id

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
END_OF_TURN = "<|end|>"
CHAT_TEMPLATE = ("{%- for m in messages -%}"
                 "{{ '<|' + m['role'] + '|>' }}{{ '\\n' }}{{ m['content'] | trim }}{{ '<|end|>' }}{{ '\\n' }}"
                 "{%- endfor -%}"
                 "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{{ '\\n' }}{%- endif -%}")
EVAL_ROWS = 64  # validation conversations scored at each evaluation (all of them at the end)


def render(template: str, messages: list[dict], add_generation_prompt: bool = False, tokens: dict | None = None) -> str:
    size = sum(len(m["content"]) for m in messages)
    return render_jinja(template, dict(messages=messages, add_generation_prompt=add_generation_prompt,
                                       **(tokens or {})), size)


def assistant_spans(template: str, messages: list[dict], tokens: dict | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = render(template, messages, tokens=tokens)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(template, messages[:i], add_generation_prompt=True, tokens=tokens)
        through = render(template, messages[:i + 1], tokens=tokens)
        if not (through.startswith(before) and text.startswith(through)):
            raise LmforgeError("the chat template does not render a conversation as the texts of its beginnings "
                               "followed by more, so the assistant's turns cannot be found in it; use a template that "
                               "appends each message (lmforge's, or ChatML-like ones)")
        spans.append((len(before), len(through)))
    return text, spans


def encode_conversation(template: str, tokenizer, messages: list[dict], tokens: dict | None = None
                        ) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation, and its labels: the id where the token's text starts in an
    assistant span, IGNORE elsewhere."""
    text, spans = assistant_spans(template, messages, tokens)
    ids, offsets = tokenizer.encode_offsets(text)
    labels = [i if any(a <= start < b for a, b in spans) else IGNORE for i, (start, _) in zip(ids, offsets)]
    return ids, labels


@dataclass
class Encoded:
    ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    truncated: int = 0  # conversations cut to the context
    dropped: int = 0  # conversations with no assistant token left within the context

    def __len__(self) -> int:
        return len(self.ids)


class ChatTask:
    """Supervised chat fine-tuning; the Trainer's task (next_batch, loss, evaluate, headline)."""

    kind = "chat"
    higher_is_better = False
    headline = "loss"

    def __init__(self, cfg: TaskConfig, train: TrainConfig, tokenizer, template: str, max_len: int,
                 tokens: dict | None = None):
        self.cfg, self.train_cfg, self.template, self.tokens = cfg, train, template, tokens or {}
        self.max_len, self.pad_id = max_len, padding_id(tokenizer)
        self.tokenizer = tokenizer
        self.data = SimpleNamespace(tokenizer=tokenizer)
        self.examples = self.val = Encoded()

    def encode(self, conversations: list[list[dict]]) -> Encoded:
        """Each conversation as ids and labels, cut to the context (a conversation left with no label is
        dropped: it would teach nothing)."""
        out = Encoded()
        for messages in conversations:
            ids, labels = encode_conversation(self.template, self.tokenizer, messages, self.tokens)
            if len(ids) > self.max_len:
                ids, labels, out.truncated = ids[:self.max_len], labels[:self.max_len], out.truncated + 1
            if all(x == IGNORE for x in labels[1:]):
                out.dropped += 1
                continue
            out.ids.append(ids)
            out.labels.append(labels)
        return out

    def fit_on(self, train: list[list[dict]], val: list[list[dict]]) -> Encoded:
        self.examples, self.val = self.encode(train), self.encode(val)
        if not len(self.examples):
            raise LmforgeError("no training conversation has an assistant reply within the model's context; give "
                               "shorter conversations or a model with a longer context")
        self.batches = ShuffledBatches(len(self.examples), self.train_cfg.batch_size, self.train_cfg.seed,
                                       [len(r) for r in self.examples.ids])
        return self.examples

    def batch(self, ex: Encoded, idx: list[int]) -> dict:
        """input_ids (B, T-1), labels (B, T-1): each row's next tokens, IGNORE at padding and non-labels."""
        T = max(len(ex.ids[i]) for i in idx)
        ids = torch.full((len(idx), T), self.pad_id, dtype=torch.long)
        labels = torch.full((len(idx), T), IGNORE, dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(ex.ids[i])] = torch.tensor(ex.ids[i])
            labels[row, :len(ex.labels[i])] = torch.tensor(ex.labels[i])
        return {"input_ids": ids[:, :-1], "labels": labels[:, 1:]}

    def next_batch(self) -> dict:
        return self.batch(self.examples, self.batches.next_indices())

    def loss(self, model, batch: dict) -> torch.Tensor:
        return clm_loss(model, batch["input_ids"], batch["labels"])

    def score(self, model, ex: Encoded, autocast=None, rows: int | None = None) -> dict:
        """Mean loss (nats) over the labelled tokens of `ex` (its first `rows` conversations), perplexity."""
        total, count = 0.0, 0
        chosen = list(range(len(ex) if rows is None else min(rows, len(ex))))
        with inference(model) as device:
            for idx in by_length([len(ex.ids[i]) for i in chosen], self.train_cfg.batch_size):
                b = self.batch(ex, [chosen[i] for i in idx])
                x, y = b["input_ids"].to(device), b["labels"].to(device)
                with (autocast or contextlib.nullcontext)():
                    total += clm_loss(model, x, y, reduction="sum").item()
                count += int((y != IGNORE).sum())
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}

    def evaluate(self, model, full: bool = False, autocast=None) -> dict:
        if not len(self.val):
            raise LmforgeError("no validation conversation has an assistant reply within the model's context; give "
                               "more conversations or raise task.val_fraction")
        return self.score(model, self.val, autocast, None if full else EVAL_ROWS)

    def state_dict(self) -> dict:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state)


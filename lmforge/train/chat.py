"""`lmforge finetune BASE --task chat --data chats.jsonl|chitchat`: a causal model fine-tuned on
conversations (tasks/chat.py), in full or with LoRA adapters.

The run directory is a chat model: besides the weights (or the adapter) and tokenizer.json (with the
role tokens, when lmforge's template added them), tokenizer_config.json holds the chat template and
the end-of-turn token, and generation_config.json the ids that end a reply, as Hugging Face keeps
them; `lmforge chat RUN` and `lmforge export` read them there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmforge.adapters import adapt
from lmforge.chat import hf_chat_template
from lmforge.checkpoint import load_checkpoint
from lmforge.config import GenerateConfig, Recipe
from lmforge.data.chats import read_chats
from lmforge.errors import LmforgeError
from lmforge.evaluate.crossval import stratified_split
from lmforge.evaluate.decoding import decode_rows
from lmforge.io import atomic_path, write_json
from lmforge.models import grow_vocab
from lmforge.tasks.chat import CHAT_TEMPLATE, END_OF_TURN, ROLE_TOKENS, ChatTask, render
from lmforge.train.runs import check_resume, load_base, resolved, settings
from lmforge.train.parallel import world
from lmforge.train.trainer import Trainer, held_run_dir

SAMPLES = 3  # test conversations answered in the report


def chat_model(base_path: str, log=print):
    """The base (a causal run or Hugging Face directory), its tokenizer and chat template: its own
    template when it has one, else lmforge's, whose role tokens join the tokenizer and the model."""
    model, tokenizer = load_base(base_path)
    if model.config.family != "gpt":
        raise LmforgeError(f"{{setting}} is a {model.config.family} model; chat fine-tuning needs a decoder-only "
                           "(GPT / Llama) model", "task.base", base_path)
    own = hf_chat_template(base_path) if Path(base_path).is_dir() else None
    source = getattr(own, "source", None)
    if source is not None:
        return model, tokenizer, source, {k: v for k, v in own.tokens.items()}
    added = tokenizer.hf.add_special_tokens(list(ROLE_TOKENS))
    if grow_vocab(model, tokenizer.vocab_size):
        log(f"added the chat template's role tokens {' '.join(ROLE_TOKENS)} to the tokenizer ({added} new) "
            f"and the model: vocabulary {tokenizer.vocab_size:,}")
    return model, tokenizer, CHAT_TEMPLATE, {"eos_token": END_OF_TURN}


def end_ids(tokenizer, tokens: dict) -> tuple[int, ...]:
    """The ids that end a reply: the template's end-of-turn (its eos_token), and end-of-text."""
    found = (tokenizer.hf.token_to_id(tokens.get("eos_token") or ""), tokenizer.eos_id)
    return tuple(dict.fromkeys(i for i in found if i is not None))


def write_chat_files(out: Path, template: str, tokens: dict, tokenizer) -> None:
    """tokenizer_config.json (the template, the end-of-turn as eos_token) and generation_config.json."""
    config = {"chat_template": template, **tokens}
    ends = end_ids(tokenizer, tokens)
    for name, body in (("tokenizer_config.json", config), ("generation_config.json", {"eos_token_id": list(ends)})):
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def samples(model, task: ChatTask, conversations: list[list[dict]], autocast) -> list[dict]:
    """Replies of the model to the first user turn of a few test conversations (greedy)."""
    picked = [c for c in conversations if any(m["role"] == "user" for m in c)][:SAMPLES]
    prompts = []
    for c in picked:
        first = next(i for i, m in enumerate(c) if m["role"] == "user")
        prompts.append(c[:first + 1])
    rows = [task.tokenizer.encode(render(task.template, p, True, task.tokens)) for p in prompts]
    stops = end_ids(task.tokenizer, task.tokens)
    with autocast():
        out = decode_rows(model, rows, lambda _: GenerateConfig(max_new_tokens=48, temperature=0.0, stop_ids=stops))
    return [{"user": p[-1]["content"], "reply": task.tokenizer.decode(ids).strip()} for p, ids in zip(prompts, out)]


def chat_run(recipe: Recipe, out: str | Path, log=print, resume: bool = False) -> dict:
    """Split the conversations, fine-tune, keep the best on validation loss, score the test split."""
    out, t = Path(out), recipe.task
    with held_run_dir(out, "lmforge finetune"):
        check_resume(out, recipe, resume)
        chats = read_chats(str(t.data))
        n = len(chats.conversations)
        split = stratified_split(["all"] * n, (1 - t.val_fraction - t.test_fraction, t.val_fraction, t.test_fraction),
                                 seed=recipe.train.seed)
        train, val, test = ([chats.conversations[i] for i in idx] for idx in split)
        log(f"{chats.description}: {len(train)} train / {len(val)} validation / {len(test)} test")
        if resume:
            model, tokenizer = load_checkpoint(out)
            own = hf_chat_template(out)
            template, tokens = own.source, dict(own.tokens)
        else:
            model, tokenizer, template, tokens = chat_model(str(t.base), log)
            adapt(model, t, log, train_also=("tok_emb.", "lm_head.") if template == CHAT_TEMPLATE else ())
            if world().main:  # under torchrun, process 0 writes the run
                write_chat_files(out, template, tokens, tokenizer)
        context = model.config.context_length
        task = ChatTask(t, recipe.train, tokenizer, template, context if t.max_length is None else
                        min(t.max_length, context), tokens)
        enc = task.fit_on(train, val)
        if enc.truncated:
            log(f"warning: {enc.truncated} of {len(train)} conversations are longer than {task.max_len} tokens and "
                "were cut at the end")
        run = resolved(recipe, model.config, len(enc))
        trainer = Trainer(model, task, run.train, out, recipe=run, resume=resume, log=log)
        result = trainer.fit()
        best, _ = load_checkpoint(out, trainer.device)
        scored = task.score(best, task.encode(test), trainer.autocast)
        report = {"task": "chat", "base": str(t.base), "data": str(t.data), "train_rows": len(train),
                  "validation_rows": len(val), "test_rows": len(test), "truncated": enc.truncated,
                  "steps": result.steps, "seconds": round(result.seconds, 1), "dtype": result.dtype,
                  "best_validation": {k: v for k, v in (result.best or {}).items() if k != "report"},
                  "test": scored, "samples": samples(best, task, test, trainer.autocast),
                  "corpus": chats.stats, "config": settings(recipe)}
        if getattr(best, "lora", None) is not None:
            from lmforge.adapters import trainable_report

            report["lora"] = trainable_report(model)
        if not math.isfinite(scored["loss"]):
            raise LmforgeError("the test loss is not a finite number; lower the learning rate and train again")
        if world().main:
            write_json(out / "report.json", report)
    return report

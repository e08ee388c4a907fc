"""Chat: a conversation rendered as one text that the model continues.

lmforge's own template (`ChatTemplate`):

    [system text]\n\n                 (optional)
    User: <message>\n
    Assistant: <reply>\n
    User: <message>\n
    Assistant:                         <- the model writes from here until "\nUser:" or end-of-text

A chat-shaped model is one trained on text of this shape; any causal LM can be driven this way,
but only such a model answers like an assistant. A Hugging Face chat model brings its own
template, a Jinja program in its tokenizer_config.json ("chat_template") or chat_template.jinja;
`HFChatTemplate` renders it as transformers' `apply_chat_template(..., add_generation_prompt=True)`
does, and the reply ends at the model's end-of-text token. When the conversation outgrows the
context, the oldest turns are left out (the system text always stays).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lmforge.errors import LmforgeError


@dataclass
class ChatTemplate:
    user: str = "User:"
    assistant: str = "Assistant:"

    def render(self, turns: list[tuple[str, str]], system: str | None = None) -> str:
        """turns: (role, text) with role "user" or "assistant"; ends with an open assistant turn."""
        lines = [f"{self.user if role == 'user' else self.assistant} {text.strip()}" for role, text in turns]
        head = f"{system.strip()}\n\n" if system else ""
        return head + "\n".join(lines + [self.assistant])

    @property
    def stops(self) -> list[str]:
        return [f"\n{self.user}"]

    def jinja(self) -> str:
        """This template as a Hugging Face chat template (Jinja, roles system / user / assistant): an
        export carries it, so transformers' apply_chat_template(messages, add_generation_prompt=True)
        gives the text `render` gives. (The reply's stop, "\nUser:", cannot travel in a template.)"""
        user, reply, prompt = (json.dumps(label) for label in (self.user + " ", self.assistant + " ", self.assistant))
        return ("{%- for m in messages -%}"
                "{%- if m['role'] == 'system' -%}{{ m['content'] | trim }}{{ '\\n\\n' }}"
                "{%- elif m['role'] == 'user' -%}{{ " + user + " }}{{ m['content'] | trim }}{{ '\\n' }}"
                "{%- elif m['role'] == 'assistant' -%}{{ " + reply + " }}{{ m['content'] | trim }}{{ '\\n' }}"
                "{%- endif -%}{%- endfor -%}"
                "{%- if add_generation_prompt -%}{{ " + prompt + " }}{%- endif -%}")


@dataclass
class HFChatTemplate:
    """A Hugging Face chat template: `source` is its Jinja text, `tokens` the special-token strings
    it may use (bos_token, eos_token, ...). Rendered in a sandbox, as transformers renders it, and
    within bounds of time and size (lmforge/chat_jinja.py)."""
    source: str
    tokens: dict = field(default_factory=dict)
    stop_ids: tuple[int, ...] = ()  # every end-of-text / end-of-turn id the model's configs name

    def render(self, turns: list[tuple[str, str]], system: str | None = None) -> str:
        from lmforge.chat_jinja import render  # jinja2 (a dependency of torch) only when a model brings a template

        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": role, "content": text} for role, text in turns]
        size = sum(len(m["content"]) for m in messages)
        return render(self.source, dict(messages=messages, add_generation_prompt=True, **self.tokens), size)

    @property
    def stops(self) -> list[str]:
        return []  # the turn ends at the end-of-text token


def _read(file: Path, parse):
    """`parse` of a UTF-8 text file, or one LmforgeError naming what is wrong with it."""
    try:
        return parse(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LmforgeError(f"{file} is not UTF-8 text; save it as UTF-8 or remove it") from None
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{file} is not valid JSON ({e}); fix or remove it") from None
    except OSError as e:
        raise LmforgeError(f"cannot read {file} ({e.strerror or e}); check the file or remove it") from None


def hf_chat_template(path: str | Path) -> ChatTemplate | HFChatTemplate | None:
    """The chat template of a Hugging Face model directory, if it has one: chat_template.jinja, or
    "chat_template" in tokenizer_config.json (a string, or named templates of which "default").
    lmforge's own template, as an export writes it, comes back as a ChatTemplate with its stop."""
    path = Path(path)
    config_file = path / "tokenizer_config.json"
    config = _read(config_file, json.loads) if config_file.is_file() else {}
    if not isinstance(config, dict):
        raise LmforgeError(f"{config_file} holds a JSON {type(config).__name__}, not an object of settings; fix or remove it")
    source = config.get("chat_template")
    if isinstance(source, list):
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        if "default" not in named and not (path / "chat_template.jinja").is_file():
            raise LmforgeError(f"{config_file} names chat templates ({', '.join(map(str, named))}) but none is "
                               "'default'; name the one to chat with 'default'")
        source = named.get("default")
    if (path / "chat_template.jinja").is_file():
        source = _read(path / "chat_template.jinja", str)
    if not isinstance(source, str) or not source.strip():
        return None
    if source == ChatTemplate().jinja():
        return ChatTemplate()

    def text(token):
        return token.get("content") if isinstance(token, dict) else token

    tokens = {k: text(v) for k, v in config.items() if k.endswith("_token") and isinstance(text(v), str)}
    from lmforge.models.hf import end_ids

    return HFChatTemplate(source, tokens, end_ids(path))


@dataclass
class Chat:
    """A conversation with `lm` (an `lmforge.api.LM`); `send` streams the reply and remembers it."""

    lm: object
    system: str | None = None
    max_new_tokens: int = 200
    sampling: dict = field(default_factory=dict)  # temperature, top_k, top_p, min_p, ... for LM.stream
    template: ChatTemplate | HFChatTemplate | None = None  # None: the model's own if it has one, else ChatTemplate()
    turns: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        if self.template is None:
            path = getattr(self.lm, "path", None)
            self.template = (path and hf_chat_template(path)) or ChatTemplate()
        if isinstance(self.template, HFChatTemplate) and self.template.tokens.get("eos_token"):
            eos = self.lm.tokenizer.hf.token_to_id(self.template.tokens["eos_token"])
            if eos is not None and eos not in self.template.stop_ids:
                self.template.stop_ids += (eos,)
        self.lm.generate_config(self.max_new_tokens, **self.sampling)  # a model or setting that cannot chat: now
        context = self.lm.config.context_length
        if self.system and len(self.lm.tokenizer.encode(self.system)) >= context - min(self.max_new_tokens, context // 4):
            raise LmforgeError(f"the system text leaves no room in the model's context of {context} tokens for a "
                               "message and a reply; shorten it")

    def prompt(self, message: str) -> str:
        """The text to continue: as many of the latest turns as fit, leaving room for the reply."""
        context = self.lm.config.context_length
        budget = context - min(self.max_new_tokens, context // 4)
        turns = self.turns + [("user", message)]
        for start in range(0, len(turns), 2):  # drop the oldest exchange first
            text = self.template.render(turns[start:], self.system)
            if len(self.lm.tokenizer.encode(text)) <= budget:
                return text
        raise LmforgeError(f"the message does not fit the model's context of {context} tokens with room for a "
                           "reply; shorten it (or the system text)")

    def send(self, message: str) -> Iterator[str]:
        text = self.prompt(message)  # the tokenizer refuses a message that was not UTF-8
        sampling = dict(self.sampling)
        if isinstance(self.template, HFChatTemplate):  # it places any bos token itself, as transformers has it
            text = self.lm.tokenizer.encode(text)
            sampling["stop_ids"] = self.template.stop_ids  # the turn ends at any of them, with the end-of-text
        # the reply is shown as it is kept: without the whitespace it starts or ends with
        reply, pending, started, finished = [], "", False, False  # pending: whitespace shown only if more follows
        try:
            for piece in self.lm.stream(text, self.max_new_tokens, stop=self.template.stops, **sampling):
                reply.append(piece)
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                body = (pending + piece).rstrip()
                pending = (pending + piece)[len(body):]
                if body:
                    yield body
            finished = True
        finally:  # also a reply stopped part-way (Ctrl-C; the generator closed): kept as far as it went
            if finished or started:
                self.turns += [("user", message), ("assistant", "".join(reply).strip())]

    def reset(self) -> None:
        self.turns = []

"""Chat: a conversation rendered as one text that the model continues.

    [system text]\n\n                 (optional)
    User: <message>\n
    Assistant: <reply>\n
    User: <message>\n
    Assistant:                         <- the model writes from here until "\nUser:" or end-of-text

A chat-shaped model is one trained on text of this shape; any causal LM can be driven this way,
but only such a model answers like an assistant. When the conversation outgrows the context, the
oldest turns are left out (the system text always stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class Chat:
    """A conversation with `lm` (an `lmforge.api.LM`); `send` streams the reply and remembers it."""

    lm: object
    system: str | None = None
    max_new_tokens: int = 200
    sampling: dict = field(default_factory=dict)  # temperature, top_k, top_p, min_p, ... for LM.stream
    template: ChatTemplate = field(default_factory=ChatTemplate)
    turns: list[tuple[str, str]] = field(default_factory=list)

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
        text = self.prompt(message)
        reply = []
        for piece in self.lm.stream(text, self.max_new_tokens, stop=self.template.stops, **self.sampling):
            reply.append(piece)
            yield piece
        self.turns += [("user", message), ("assistant", "".join(reply).strip())]

    def reset(self) -> None:
        self.turns = []

"""Conversations for chat fine-tuning, in the shapes OpenAI's API and TRL use, or the built-in corpus.

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}          one conversation per JSON line
    {"prompt": "...", "completion": "..."}                               one user turn, one assistant turn

`chitchat`: the chitchat-dataset wheel on PyPI (0.9.0, MIT; BYU's Perception, Control and Cognition
lab): 7,168 English conversations between two people chatting about a prompt. Each speaker's
consecutive messages become one turn (joined by a line break); the first speaker is the user and the
other the assistant. The 3,151 conversations in which one person wrote alone have no reply to learn
and are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data import corpora
from lmforge.data.corpora import chitchat_conversations
from lmforge.data.labelled import json_lines
from lmforge.errors import LmforgeError

ROLES = ("system", "user", "assistant")


@dataclass
class Chats:
    conversations: list[list[dict[str, str]]]  # each a list of {"role": ..., "content": ...}
    description: str
    stats: dict = field(default_factory=dict)


def _message(m, where: str) -> dict[str, str]:
    if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
        raise LmforgeError(f"{where} is not a message; give {{\"role\": \"system\" | \"user\" | \"assistant\", "
                           "\"content\": \"text\"}")
    return {"role": m["role"], "content": m["content"]}


def conversation(record, where: str) -> list[dict[str, str]]:
    """One JSON record -> its messages, checked: known roles, text contents, a system message only
    first, and at least one assistant turn (the loss is on the assistant's words)."""
    if isinstance(record, dict) and "messages" in record:
        if not isinstance(record["messages"], list) or not record["messages"]:
            raise LmforgeError(f"{where}: \"messages\" must be a non-empty list of messages")
        msgs = [_message(m, f"{where}, message {i + 1}") for i, m in enumerate(record["messages"])]
    elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        msgs = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    else:
        raise LmforgeError(f"{where} is neither {{\"messages\": [...]}} nor {{\"prompt\": ..., \"completion\": ...}}; "
                           "give one conversation per line in one of those shapes")
    if any(m["role"] == "system" for m in msgs[1:]):
        raise LmforgeError(f"{where} has a system message after the first; put the system text first, once")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        raise LmforgeError(f"{where} has no assistant reply; chat fine-tuning learns the assistant's words, so "
                           "each conversation needs at least one")
    return msgs


def read_jsonl(path: Path) -> list[list[dict[str, str]]]:
    out = [conversation(record, f"{path} line {n}") for n, record in json_lines(path)]
    if not out:
        raise LmforgeError(f"{path} holds no conversation; give one JSON object per line")
    return out


def read_chats(spec: str) -> Chats:
    """`chitchat`, or a .jsonl file of conversations."""
    if spec == "chitchat":
        raw = json.loads((corpora.fetch("chitchat") / "dataset.json").read_text(encoding="utf-8"))
        convs, alone = chitchat_conversations(raw)
        return Chats(convs, f"chitchat: {len(convs):,} two-person conversations", {"one_sided_left_out": alone})
    path = Path(spec)
    if not path.is_file():
        raise LmforgeError(f"{spec} is not a file; give a .jsonl file of conversations or the built-in chitchat")
    if path.suffix.lower() != ".jsonl":
        raise LmforgeError(f"{spec} is not a .jsonl file; give one conversation per line as JSON "
                           "({\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...})")
    convs = read_jsonl(path)
    return Chats(convs, f"{path.name}: {len(convs):,} conversations")

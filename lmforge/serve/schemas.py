"""The request bodies of OpenAI's completions and chat completions APIs, as `lmforge serve` takes them.

Fields a client may send that lmforge does not use (user, presence_penalty, ...) are accepted and
ignored, as servers of this API do; a known field of the wrong type is a 400 naming it.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16  # choices per request


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class Sampling(BaseModel):
    """What both endpoints share."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


class CompletionRequest(Sampling):
    prompt: Union[str, list[int]]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(default=None, ge=0, le=5)  # each token's log p and this many likeliest

    @property
    def top(self) -> int | None:
        return self.logprobs


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def top(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class ClassifyRequest(BaseModel):
    """POST /v1/classify: a text or a list of texts for a fine-tuned classifier; `pair`: the second
    text of each (as many), for a classifier fine-tuned on text pairs (premise and hypothesis, ...)."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: Union[str, list[str]]
    pair: Union[str, list[str], None] = None


class ReloadRequest(BaseModel):
    """POST /v1/admin/reload: the model to reload (all of them when none is named)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None

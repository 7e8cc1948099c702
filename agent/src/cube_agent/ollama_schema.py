"""Ollama's request bodies (api/types.go of Ollama 0.12.3) as pydantic models.

Only what the translation onto an OpenAI-compatible engine reads is typed; other fields are
ignored, as Go's encoding/json ignores them. A body of the wrong shape (`messages: 5`,
`options: "s"`, `stream: "yes"`) is a 400 in Ollama's error shape, never a 500 from deep
inside the translation: `parse(Model, body)` raises AgentError with pydantic's first error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

from .errors import AgentError

Number = Annotated[float, Field(allow_inf_nan=False)]

# Go's time.ParseDuration units, as api.Duration reads a string keep_alive.
_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_UNIT_NS = {"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}


def _duration_seconds(value: Any) -> float | None:
    """api.Duration: a number is seconds, a string a Go duration ("5m", "0"); None unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a number of seconds or a duration such as 5m")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        raise ValueError(f"time: invalid duration {value!r} (keep_alive: 5m, 1h, 0, -1 ...)")
    sign = -1.0 if value.startswith("-") else 1.0
    total = sum(
        float(n) * _UNIT_NS[unit]
        for n, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", value)
    )
    return sign * total / 1e9


KeepAlive = Annotated[float | None, BeforeValidator(_duration_seconds)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ToolFunction(_Body):
    index: int | None = None
    name: str
    arguments: dict[str, Any] | str | None = None


class ToolCall(_Body):
    id: str | None = None
    function: ToolFunction


class Message(_Body):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    # not Ollama's, but some clients written for OpenAI send it on tool results
    tool_call_id: str | None = None


class Options(_Body):
    """The generation options the translation maps (others are accepted and ignored)."""

    temperature: Number | None = None
    top_p: Number | None = None
    top_k: int | None = None
    min_p: Number | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    frequency_penalty: Number | None = None
    presence_penalty: Number | None = None
    repeat_penalty: Number | None = None


Think = StrictBool | Literal["high", "medium", "low"] | None
Format = Literal["", "json"] | dict[str, Any] | None


class _Generation(_Body):
    model: str | None = ""
    stream: StrictBool | None = None
    format: Format = None
    keep_alive: KeepAlive = None
    options: Options | None = None
    think: Think = None

    @property
    def streams(self) -> bool:
        """Ollama streams unless `stream` is false (null streams too)."""
        return self.stream is not False


class ChatRequest(_Generation):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation):
    prompt: str | None = ""
    suffix: str | None = ""
    system: str | None = ""
    template: str | None = ""
    context: list[int] | None = None
    raw: StrictBool | None = False
    images: list[str] | None = None


class EmbedRequest(_Body):
    model: str | None = ""
    input: str | list[str] | None = None
    truncate: StrictBool | None = None
    dimensions: int | None = Field(None, ge=0)
    keep_alive: KeepAlive = None
    options: Options | None = None


class EmbeddingsRequest(_Body):
    """The legacy /api/embeddings: one prompt, one vector."""

    model: str | None = ""
    prompt: str | None = ""
    keep_alive: KeepAlive = None
    options: Options | None = None


class ShowRequest(_Body):
    model: str | None = ""
    name: str | None = ""  # the field's old name, still read by Ollama
    verbose: StrictBool | None = None


B = TypeVar("B", bound=BaseModel)


def parse(model: type[B], body: bytes) -> B:
    """The request body as `model`, or a 400 naming the first field that is wrong."""
    if not body.strip():
        raise AgentError(400, "missing request body", "invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AgentError(400, f"malformed JSON body: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise AgentError(400, "the JSON body must be an object", "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise AgentError(400, f"invalid request: {where}: {message}", "invalid_request") from None

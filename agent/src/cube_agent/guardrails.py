"""Optional NeMo Guardrails stage for `/v1/chat/completions` and `/api/chat`.

Off unless UV_CUBE_AGENT_GUARDRAILS_CONFIG names a configuration directory; this module
imports `nemoguardrails` only when a `Guardrails` is built, so an agent without it pays
nothing. The default configuration ships as package data (`guardrails_default/`) and is
installed to /etc/cube/guardrails/ in the image.

The rails' own model calls go to the agent's engine (`<UV_CUBE_AGENT_TARGET_URL>/v1`,
OpenAI-compatible: Ollama, vLLM and llama.cpp all serve it) with the model the client
asked for, unless the configuration declares its own `main` model: guardrails work
offline in the CVM.

Rules:
- Input rails run on every user message of the conversation, not only the last one: a
  client replays its own, unmasked history on each turn. Results are remembered by content
  hash, so a replayed history costs no new model call.
- Output rails run on the whole answer. For a streamed request they need the whole answer
  too: when the configuration has output rails, the engine's stream is buffered, checked,
  then sent (unchanged bytes when it passes). Without output rails a stream passes through
  untouched. Input rails apply to streamed and plain requests alike.
- A block answers 200 in the client's API shape (OpenAI: the refusal as the assistant
  message with finish_reason "content_filter"; Ollama: the refusal with done: true and
  done_reason "content_filter"), streamed if the client asked for a stream, and counts
  cube_agent_guardrails_blocked_total{stage="input"|"output"}.
- If the rails cannot run (engine down, broken rail), the request fails closed with 502:
  nothing unchecked reaches the engine or the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from starlette.responses import Response

from .config import ENV_PREFIX, ConfigError
from .errors import AgentError

log = logging.getLogger("cube_agent.guardrails")

DEFAULT_CONFIG_DIR = Path(__file__).parent / "guardrails_default"
FINISH_REASON = "content_filter"
MAX_JUDGES = 8  # LLMRails instances kept, one per judging model

Api = Literal["openai", "ollama"]
Forward = Callable[[bytes], Awaitable[Response]]


@dataclass(frozen=True)
class Verdict:
    """What the rails decided: allow, block with a refusal, or allow a rewritten text."""

    blocked: bool = False
    refusal: str = ""
    rail: str | None = None
    messages: list[dict[str, Any]] | None = None  # input rewritten (masked), else None
    text: str | None = None  # output rewritten (masked), else None


ALLOW = Verdict()


def openai_base_url(target: str) -> str:
    target = target.rstrip("/")
    return target if target.endswith("/v1") else f"{target}/v1"


class Guardrails:
    """NeMo Guardrails built from a configuration directory, judging with the engine."""

    def __init__(
        self,
        config_dir: Path,
        engine_url: str,
        registry: CollectorRegistry = REGISTRY,
        cache_size: int = 4096,
        max_answer: int = 32 * 1024 * 1024,
    ) -> None:
        where = f"{ENV_PREFIX}GUARDRAILS_CONFIG={config_dir}"
        try:
            from nemoguardrails import RailsConfig  # here, not at the top: off costs no import
        except ImportError as exc:
            raise ConfigError(
                f"{where}: nemoguardrails is not installed (pip install 'cube-agent[guardrails]')"
            ) from exc
        if not any((config_dir / name).is_file() for name in ("config.yml", "config.yaml")):
            raise ConfigError(f"{where}: no config.yml in that directory")
        try:
            self.config = RailsConfig.from_path(str(config_dir))
        except Exception as exc:  # NeMo raises many kinds for a bad configuration
            raise ConfigError(f"{where}: {exc}".splitlines()[0]) from exc
        self.base_url = openai_base_url(engine_url)
        self.has_input = bool(self.config.rails.input.flows)
        self.has_output = bool(self.config.rails.output.flows)
        self._own_model = any(m.type == "main" for m in self.config.models)
        self._rails: dict[str | None, Any] = {}
        self._rails_lock = asyncio.Lock()
        self._seen: OrderedDict[bytes, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self.max_answer = max_answer  # an answer held whole for the output rails (502)
        # Only exists when guardrails are on.
        blocked = Counter(
            "cube_agent_guardrails_blocked",
            "Requests a guardrail refused, by stage (input: before the engine; output: after)",
            ["stage"],
            registry=registry,
        )
        self.blocked_input = blocked.labels(stage="input")
        self.blocked_output = blocked.labels(stage="output")

    @classmethod
    def from_settings(cls, settings: Any, registry: CollectorRegistry = REGISTRY) -> Guardrails:
        return cls(
            Path(settings.guardrails_config),
            settings.target,
            registry,
            max_answer=settings.max_answer_bytes,
        )

    async def _rails_for(self, model: str | None) -> Any:
        """One LLMRails per judging model, built on first use (about a second, off-loop)."""
        key = None if self._own_model else model
        if key in self._rails:
            return self._rails[key]
        async with self._rails_lock:
            if key not in self._rails:
                rails = await asyncio.to_thread(self._build_rails, key)
                # Model names come from clients: keep a few, not one per name ever seen.
                if len(self._rails) >= MAX_JUDGES:
                    del self._rails[next(iter(self._rails))]
                self._rails[key] = rails
        return self._rails[key]

    def _build_rails(self, model: str | None) -> Any:
        from nemoguardrails import LLMRails
        from nemoguardrails.rails.llm.config import Model

        config = self.config
        if model is not None:
            engine = Model(
                type="main",
                engine="openai",
                model=model,
                # Local engines take no key; the OpenAI-compatible client wants one anyway.
                parameters={"base_url": self.base_url, "api_key": "cube-agent"},
            )
            config = config.model_copy(update={"models": [*config.models, engine]})
        elif not self._own_model:
            raise AgentError(400, "guardrails: the request names no model")
        return LLMRails(config)

    async def _check(self, messages: list[dict[str, Any]], stage: str, model: str | None) -> Any:
        from nemoguardrails.rails.llm.options import RailType

        rail_type = RailType.INPUT if stage == "input" else RailType.OUTPUT
        rails = await self._rails_for(model)
        try:
            return await rails.check_async(messages, rail_types=[rail_type])
        except Exception as exc:
            log.warning("guardrails %s check failed: %s", stage, exc)
            # The exception may name the engine's address: the log keeps it, not the client.
            raise AgentError(502, f"guardrails: the {stage} check could not run") from exc

    async def _check_user_text(self, text: str, model: str | None) -> Verdict:
        key = hashlib.sha256(text.encode()).digest()
        if (seen := self._seen.get(key)) is not None:
            self._seen.move_to_end(key)
            return seen
        result = await self._check([{"role": "user", "content": text}], "input", model)
        verdict = _verdict(result, text)
        self._seen[key] = verdict
        if len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
        return verdict

    async def check_input(
        self, messages: list[dict[str, Any]], model: str | None = None
    ) -> Verdict:
        """Run the input rails on every user message; block, mask, or allow as is."""
        if not self.has_input:
            return ALLOW
        users = (t for m in messages if m.get("role") == "user" for t in _texts(m))
        texts = list(dict.fromkeys(users))  # unique, in order
        results = await asyncio.gather(*(self._check_user_text(t, model) for t in texts))
        verdicts = dict(zip(texts, results, strict=True))
        for verdict in verdicts.values():
            if verdict.blocked:
                return verdict
        rewrites = {t: v.text for t, v in verdicts.items() if v.text is not None}
        if not rewrites:
            return ALLOW
        return Verdict(messages=[_rewrite(m, rewrites) for m in messages])

    async def check_output(
        self,
        text: str,
        messages: list[dict[str, Any]] | None = None,
        model: str | None = None,
    ) -> Verdict:
        """Run the output rails on an answer (with the last user message as context)."""
        if not self.has_output or not text:
            return ALLOW
        user = next(
            ("\n".join(_texts(m)) for m in reversed(messages or []) if m.get("role") == "user"),
            "",
        )
        conversation = [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        return _verdict(await self._check(conversation, "output", model), text)

    async def guard(self, api: Api, raw: bytes, forward: Forward) -> Response:
        """The agent's seam: check the request body, `forward` it (the same bytes unless a
        rail rewrote it), check the answer, and return what the client gets."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            # Not a chat request: nothing to check; the engine answers it as it would anyway.
            return await forward(raw)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = bool(body.get("stream", api == "ollama"))  # Ollama streams by default
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]

        verdict = await self.check_input(messages, model)
        if verdict.blocked:
            self.blocked_input.inc()
            return refusal_response(api, model, verdict.refusal, stream)
        if verdict.messages is not None:
            messages = verdict.messages
            raw = orjson.dumps({**body, "messages": messages})

        response = await forward(raw)
        if not self.has_output or response.status_code != 200:
            return response

        raw = await _read_body(response, self.max_answer)
        text = answer_text(api, raw, stream)
        verdict = await self.check_output(text, messages, model)
        if verdict.blocked:
            self.blocked_output.inc()
            return refusal_response(api, model, verdict.refusal, stream, like=raw)
        if verdict.text is not None:
            return answer_response(api, model, verdict.text, stream, "stop", like=raw)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(raw, status_code=200, headers=headers)


def _verdict(result: Any, original: str) -> Verdict:
    status = getattr(result.status, "value", result.status)
    if status == "blocked":
        return Verdict(blocked=True, refusal=result.content, rail=result.rail)
    if status == "modified" and result.content != original:
        return Verdict(text=result.content)
    return ALLOW


def _texts(message: dict[str, Any]) -> list[str]:
    """The text a message carries: a string, or OpenAI's list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and p.get("text")]
    return []


def _rewrite(message: dict[str, Any], rewrites: dict[str, str | None]) -> dict[str, Any]:
    if message.get("role") != "user":
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": rewrites.get(content) or content}
    if isinstance(content, list):
        parts = [
            {**p, "text": rewrites.get(p["text"]) or p["text"]}
            if isinstance(p, dict) and isinstance(p.get("text"), str)
            else p
            for p in content
        ]
        return {**message, "content": parts}
    return message


async def _read_body(response: Response, limit: int) -> bytes:
    """The whole answer, for the output rails to judge: at most `limit` bytes (502 past
    it, and the engine's stream is closed), as the proxy holds any whole answer."""
    iterator = getattr(response, "body_iterator", None)
    if iterator is None:
        return bytes(response.body)
    chunks: list[bytes] = []
    size = 0
    try:
        async for c in iterator:
            chunk = c.encode() if isinstance(c, str) else bytes(c)
            size += len(chunk)
            if size > limit:
                raise AgentError(
                    502, "the engine's answer is larger than the agent holds", "upstream_error"
                )
            chunks.append(chunk)
    finally:
        if size > limit and hasattr(iterator, "aclose"):
            await iterator.aclose()  # the relay closes the engine connection
    if response.background is not None:
        await response.background()
    return b"".join(chunks)


def _events(api: Api, raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a streamed answer: OpenAI SSE `data:` lines or Ollama NDJSON."""
    events = []
    for line in raw.splitlines():
        line = line.strip()
        if api == "openai":
            if not line.startswith(b"data:"):
                continue
            line = line[5:].strip()
            if line == b"[DONE]":
                continue
        if line:
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return events


def answer_text(api: Api, raw: bytes, stream: bool) -> str:
    """The assistant's text in an engine answer, streamed or not, in either API's shape."""
    try:
        objects = _events(api, raw) if stream else [orjson.loads(raw)]
    except orjson.JSONDecodeError:
        return ""
    parts = []
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        if api == "ollama":
            parts.append((obj.get("message") or {}).get("content") or "")
        else:
            for choice in obj.get("choices") or []:
                part = choice.get("delta" if stream else "message") or {}
                parts.append(part.get("content") or "")
    return "".join(parts)


def _template(api: Api, raw: bytes | None, stream: bool) -> dict[str, Any]:
    """The engine answer's object to keep in a rewrite: OpenAI's first (id, created,
    model), Ollama's last (model, created_at and the counters)."""
    if not raw:
        return {}
    try:
        objects = _events(api, raw) if stream else [orjson.loads(raw)]
    except orjson.JSONDecodeError:
        return {}
    objects = [o for o in objects if isinstance(o, dict)]
    if not objects:
        return {}
    return objects[-1] if api == "ollama" else objects[0]


def answer_response(
    api: Api,
    model: str | None,
    text: str,
    stream: bool,
    finish: str,
    like: bytes | None = None,
) -> Response:
    """A complete answer carrying `text`, in the client's API shape, streamed or not."""
    first = _template(api, like, stream)
    if api == "ollama":
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        done = {
            **first,
            "model": first.get("model", model),
            "created_at": first.get("created_at", now),
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": finish,
        }
        if not stream:
            return Response(orjson.dumps(done), media_type="application/json")
        return Response(orjson.dumps(done) + b"\n", media_type="application/x-ndjson")

    base = {
        "id": first.get("id", f"chatcmpl-guardrails-{time.time_ns()}"),
        "created": first.get("created", int(time.time())),
        "model": first.get("model", model),
    }
    if not stream:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }
        return Response(
            orjson.dumps({**base, "object": "chat.completion", "choices": [choice]}),
            media_type="application/json",
        )
    chunks = [
        {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": finish},
    ]
    events = [
        b"data: "
        + orjson.dumps({**base, "object": "chat.completion.chunk", "choices": [c]})
        + b"\n\n"
        for c in chunks
    ]
    return Response(b"".join([*events, b"data: [DONE]\n\n"]), media_type="text/event-stream")


def refusal_response(
    api: Api, model: str | None, refusal: str, stream: bool, like: bytes | None = None
) -> Response:
    return answer_response(api, model, refusal, stream, FINISH_REASON, like)

"""OllamaStream on hand-made event sequences: the delta shapes engines send that the tool
engine does not (no index, whole arguments, several choices, llama.cpp's native events)."""

from __future__ import annotations

import asyncio

import orjson
from cube_agent.translate import OllamaStream, sse_to_ndjson


def run(events: list, kind: str = "chat") -> list[dict]:
    async def lines():
        for event in events:
            raw = event if isinstance(event, bytes) else orjson.dumps(event)
            yield b"data: " + raw + b"\n"
            yield b"\n"
        yield b"data: [DONE]\n"

    async def collect():
        stream = OllamaStream("asked-for", kind, 0.0)
        return [orjson.loads(line) async for line in sse_to_ndjson(lines(), stream)]

    return asyncio.run(collect())


def delta(**fields) -> dict:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def calls_of(objects: list[dict]) -> list:
    return [c for o in objects for c in o.get("message", {}).get("tool_calls", [])]


def test_fragments_without_index_continue_the_last_call():
    out = run(
        [
            delta(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}]),
            delta(tool_calls=[{"function": {"arguments": ": 1}"}}]),
            delta(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{}"}}]),
        ]
    )
    assert calls_of(out) == [
        {"function": {"name": "f", "arguments": {"x": 1}}},
        {"function": {"index": 1, "name": "g", "arguments": {}}},
    ]
    assert out[-1]["done"] is True and out[-2]["done"] is False


def test_whole_arguments_as_an_object_and_other_choices_ignored():
    out = run(
        [
            delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": {"x": 2}}}]),
            {"choices": [{"index": 1, "delta": {"content": "other answer"}}]},
            delta(content="text"),
        ]
    )
    assert calls_of(out) == [{"function": {"name": "f", "arguments": {"x": 2}}}]
    assert "".join(o["message"]["content"] for o in out) == "text"


def test_llama_cpp_native_events_and_the_model_asked_for():
    out = run(
        [
            {"content": "mid", "stop": False},
            {"content": "dle", "stop": False},
            {"content": "", "stop": True, "stop_type": "limit", "timings": {"predicted_n": 2}},
        ],
        kind="generate",
    )
    assert "".join(o["response"] for o in out) == "middle"
    assert out[-1]["done_reason"] == "length" and out[-1]["eval_count"] == 2
    assert {o["model"] for o in out} == {"asked-for"}


def test_a_broken_event_or_an_error_event_ends_with_an_error_line():
    for bad in (b"{not json", orjson.dumps({"error": {"message": "engine fell over"}})):
        out = run([delta(content="partial"), bad, delta(content="never")])
        assert out[0]["message"]["content"] == "partial"
        assert "error" in out[-1] and not any(o.get("done") for o in out)

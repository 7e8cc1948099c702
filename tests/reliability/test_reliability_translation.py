"""Hostile bodies on the Ollama API translated onto an OpenAI-only engine.

Every malformed body is a 400 in Ollama's error shape, before anything reaches the engine;
never a 500 from inside the translation, and the agent keeps serving. An engine that sends
broken tool-call arguments gives the client an error, not a call it cannot parse.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import httpx
import ollama
import pytest
from reliability_support import Agent, start_agent
from support.engines import TOOL_MODEL as MODEL
from support.engines import Engine, start_tool_engine

USER = [{"role": "user", "content": "hi"}]
CALL = [{"function": {"name": "f", "arguments": {}}}]

HOSTILE = [
    ("chat", {"model": MODEL, "messages": 5}),
    ("chat", {"model": MODEL, "messages": "hi"}),
    ("chat", {"model": MODEL, "messages": [1]}),
    ("chat", {"model": MODEL, "messages": [{"content": "no role"}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}),
    ("chat", {"model": MODEL, "messages": USER, "options": "s"}),
    ("chat", {"model": MODEL, "messages": USER, "options": {"temperature": "hot"}}),
    ("chat", {"model": MODEL, "messages": USER, "options": {"num_predict": 1.5}}),
    ("chat", {"model": MODEL, "messages": USER, "stream": "yes"}),
    ("chat", {"model": MODEL, "messages": USER, "think": "max"}),
    ("chat", {"model": MODEL, "messages": USER, "format": "xml"}),
    ("chat", {"model": MODEL, "messages": USER, "keep_alive": "5"}),
    ("chat", {"model": MODEL, "messages": USER, "keep_alive": True}),
    ("chat", {"model": MODEL, "messages": USER, "tools": "all"}),
    ("chat", {"model": MODEL, "messages": [{"role": "user", "images": ["not base64!"]}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "user", "images": [5]}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "assistant", "tool_calls": 5}]}),
    ("chat", {"model": MODEL, "messages": [{"role": "assistant", "tool_calls": [{"f": 1}]}]}),
    (
        "chat",
        {
            "model": MODEL,
            "messages": [
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}
            ],
        },
    ),
    ("chat", {"model": 5, "messages": USER}),
    ("generate", {"model": MODEL, "prompt": 5}),
    ("generate", {"model": MODEL, "prompt": "x", "context": [300]}),
    ("generate", {"model": MODEL, "prompt": "x", "context": [-1]}),
    ("generate", {"model": MODEL, "prompt": "x", "context": ["a"]}),
    ("generate", {"model": MODEL, "prompt": "x", "context": [1, 2, 3]}),
    ("generate", {"model": MODEL, "prompt": "x", "raw": "yes"}),
    ("generate", {"model": MODEL, "prompt": "x", "images": "abc"}),
    ("embed", {"model": MODEL, "input": 5}),
    ("embed", {"model": MODEL, "input": [1, 2]}),
    ("embed", {"model": MODEL, "input": "x", "dimensions": -1}),
    ("embeddings", {"model": MODEL, "prompt": ["x"]}),
    ("show", {"model": 5}),
]
RAW = [b"", b"   ", b"[]", b'"x"', b"{not json", b"[" * 5000 + b"]" * 5000, b"\xff\xfe"]


@pytest.fixture(scope="module")
def translated(keys) -> Iterator[tuple[Engine, Agent]]:
    engine = start_tool_engine()
    agent = start_agent(engine.url, keys)
    try:
        yield engine, agent
    finally:
        agent.stop()
        engine.stop()


def last_request(engine: Engine) -> dict:
    with urllib.request.urlopen(engine.url + "/last", timeout=5) as response:
        return json.load(response)


@pytest.mark.parametrize(("endpoint", "body"), HOSTILE, ids=lambda v: json.dumps(v)[:60])
def test_malformed_bodies_are_400_in_ollamas_shape(translated, endpoint, body):
    engine, agent = translated
    before = last_request(engine)
    answer = httpx.post(f"{agent.url}/api/{endpoint}", headers=agent.headers(), json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]
    assert last_request(engine) == before, "a malformed body reached the engine"


@pytest.mark.parametrize("raw", RAW, ids=lambda v: repr(v[:12]))
@pytest.mark.parametrize("endpoint", ["chat", "generate", "embed", "show"])
def test_bodies_that_are_no_json_object_are_400(translated, endpoint, raw):
    _, agent = translated
    answer = httpx.post(f"{agent.url}/api/{endpoint}", headers=agent.headers(), content=raw)
    assert answer.status_code == 400, answer.text
    assert isinstance(answer.json()["error"], str)


def test_the_agent_still_serves_afterwards(translated):
    _, agent = translated
    reply = ollama.Client(host=agent.url, headers=agent.headers()).chat(MODEL, USER, think=False)
    assert reply.message.content == "Echo: hi"


@pytest.mark.parametrize("stream", [False, True])
def test_broken_tool_arguments_from_the_engine_are_an_error(keys, stream):
    engine = start_tool_engine("--bad-arguments")
    agent = start_agent(engine.url, keys)
    try:
        client = ollama.Client(host=agent.url, headers=agent.headers())
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ask = [{"role": "user", "content": 'call f with {"a": 1}'}]
        with pytest.raises(ollama.ResponseError) as broken:
            reply = client.chat(MODEL, ask, tools=[tool], stream=stream)
            list(reply) if stream else None
        assert "arguments for tool 'f' that are not JSON" in broken.value.error
    finally:
        agent.stop()
        engine.stop()

"""Ollama's API on OpenAI-only engines: the unmodified `ollama` client through the agent.

The same client code runs in front of the Ollama double (qwen3:0.6b: tools and thinking)
and in front of tool_engine.py as llama.cpp's server and as vLLM answer: tool calls whose
deltas come in fragments, reasoning, images, fill-in-the-middle. Both follow one convention
(`call NAME with {JSON}` calls a tool, a tool result is answered "tool said: ...", thinking
is "thinking about: ..."), so answers are compared exactly.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import urllib.request
from pathlib import Path

import httpx
import ollama
import pytest
from support import Process, free_port
from support.engines import TOOL_MODEL as MODEL
from support.engines import Engine, start_tool_engine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ASK_WEATHER = 'call get_weather with {"city": "Paris", "days": 2}'
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def client(agent) -> ollama.Client:
    return ollama.Client(host=agent.url, headers=agent.headers(), timeout=30)


def last_request(engine: Engine) -> dict:
    with urllib.request.urlopen(engine.url + "/last", timeout=5) as response:
        return json.load(response)


def streamed(parts) -> dict:
    """What a streaming client gathers: text, thinking, tool calls, and the last chunk."""
    parts = list(parts)
    assert parts[-1].done is True
    assert all(p.done is False for p in parts[:-1])
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    return {
        "content": "".join(p.message.content or "" for p in parts),
        "thinking": "".join(p.message.thinking or "" for p in parts),
        "calls": [(c.function.name, dict(c.function.arguments)) for c in calls],
        "last": parts[-1],
        "parts": parts,
    }


# -- tool calls ------------------------------------------------------------------------------


def test_streamed_tool_call_arrives_whole_before_done(tools_agent):
    _, _, agent = tools_agent
    got = streamed(
        client(agent).chat(
            model=MODEL,
            messages=[{"role": "user", "content": ASK_WEATHER}],
            tools=[WEATHER],
            stream=True,
        )
    )
    assert got["calls"] == [("get_weather", {"city": "Paris", "days": 2})]
    with_calls = [i for i, p in enumerate(got["parts"]) if p.message.tool_calls]
    assert len(with_calls) == 1 and with_calls[0] < len(got["parts"]) - 1
    assert got["last"].done_reason == "stop"


def test_parallel_tool_calls_streamed_and_not(tools_agent):
    name, _, agent = tools_agent
    if name == "ollama":
        pytest.skip("the Ollama double's model calls one tool a turn")
    ask = 'call get_weather with {"city": "Paris"} and call get_time with {"city": "Oslo"}'
    messages = [{"role": "user", "content": ask}]
    want = [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Oslo"})]
    got = streamed(client(agent).chat(MODEL, messages, tools=[WEATHER, TIME], stream=True))
    assert got["calls"] == want
    whole = client(agent).chat(MODEL, messages, tools=[WEATHER, TIME], stream=False)
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls] == want


@pytest.mark.parametrize("stream", [False, True])
def test_two_turn_tool_loop(tools_agent, stream):
    """The history ollama-python sends back (the assistant's call with object arguments,
    then the tool's result with tool_name) is accepted, and the model answers from it."""
    name, engine, agent = tools_agent
    c = client(agent)
    messages: list = [{"role": "user", "content": ASK_WEATHER}]
    first = c.chat(MODEL, messages, tools=[WEATHER], stream=False)
    assert first.message.tool_calls
    messages.append(first.message)
    messages.append({"role": "tool", "content": "18 degrees", "tool_name": "get_weather"})
    if stream:
        got = streamed(c.chat(MODEL, messages, tools=[WEATHER], stream=True))
        text = got["content"]
    else:
        text = c.chat(MODEL, messages, tools=[WEATHER], stream=False).message.content
    assert text == "tool said: 18 degrees"
    if name != "ollama":
        sent = last_request(engine)["messages"]
        call = sent[1]["tool_calls"][0]
        assert call["type"] == "function"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
        assert sent[2] == {"role": "tool", "content": "18 degrees", "tool_call_id": call["id"]}


# -- thinking ------------------------------------------------------------------------------


def test_think_true_gives_thinking_streamed_and_not(tools_agent):
    _, _, agent = tools_agent
    c = client(agent)
    messages = [{"role": "user", "content": "why"}]
    whole = c.chat(MODEL, messages, think=True, stream=False)
    assert whole.message.thinking == "thinking about: why"
    assert whole.message.content == "Echo: why"
    got = streamed(c.chat(MODEL, messages, think=True, stream=True))
    assert got["thinking"] == "thinking about: why"
    assert got["content"] == "Echo: why"
    gen = c.generate(MODEL, "why", think=True, stream=False)
    assert gen.thinking == "thinking about: why" and gen.response == "Echo: why"


def test_think_false_turns_thinking_off(tools_agent):
    name, engine, agent = tools_agent
    reply = client(agent).chat(MODEL, [{"role": "user", "content": "why"}], think=False)
    assert not reply.message.thinking
    assert reply.message.content == "Echo: why"
    if name != "ollama":
        assert last_request(engine)["chat_template_kwargs"] == {"enable_thinking": False}


# -- show, version, heartbeat ---------------------------------------------------------------------


def context_length(info) -> int:
    lengths = [v for k, v in info.items() if k.endswith(".context_length")]
    assert len(lengths) == 1, info
    return lengths[0]


def test_show_answers_for_every_name_chat_accepts(tools_agent):
    """llama-index calls show() before every request and reads `<arch>.context_length`;
    litellm and others read the capabilities."""
    name, _, agent = tools_agent
    c = client(agent)
    shown = c.show(MODEL)
    assert "completion" in shown.capabilities
    assert context_length(shown.modelinfo) > 0
    if name != "vllm":  # vLLM does not say what its model can do
        assert {"tools", "thinking"} <= set(shown.capabilities)
        assert "tools" in shown.template
    if name == "llama.cpp":
        # the engine's own name is listed, and it serves that model under any name
        assert [m.model for m in c.list().models] == ["qwen3-tools"]
        assert context_length(c.show("any-name").modelinfo) == 4096
    else:
        with pytest.raises(ollama.ResponseError) as missing:
            c.show("any-name")
        assert missing.value.status_code == 404
        with pytest.raises(ollama.ResponseError):
            c.chat("any-name", [{"role": "user", "content": "x"}])
    if name == "vllm":
        assert context_length(shown.modelinfo) == 4096  # its max_model_len


def test_version_and_heartbeat(tools_agent):
    _, _, agent = tools_agent
    version = httpx.get(agent.url + "/api/version", headers=agent.headers(), timeout=10)
    assert version.status_code == 200 and version.json() == {"version": "0.12.3"}
    for method in ("GET", "HEAD"):
        root = httpx.request(method, agent.url + "/", timeout=10)  # no key, as Ollama
        assert root.status_code == 200
        assert root.text == ("Ollama is running" if method == "GET" else "")


# -- the smaller items ---------------------------------------------------------------------------


def test_answers_name_the_model_the_client_asked_for(tools_agent):
    _, _, agent = tools_agent
    c = client(agent)
    assert c.chat(MODEL, [{"role": "user", "content": "x"}], stream=False).model == MODEL
    assert all(
        p.model == MODEL for p in c.chat(MODEL, [{"role": "user", "content": "x"}], stream=True)
    )
    assert c.generate(MODEL, "x", stream=False).model == MODEL


def test_a_model_is_required(tools_agent):
    """As Ollama 0.12.3: chat 400 "model is required"; generate 404 (routes.go
    GenerateHandler keeps that status on purpose). The ollama client checks the name itself,
    so this is what curl and other clients get."""
    _, _, agent = tools_agent
    for path, status, error in (
        ("/api/chat", 400, "model is required"),
        ("/api/generate", 404, "model '' not found"),
    ):
        response = httpx.post(
            agent.url + path, headers=agent.headers(), json={"prompt": "x"}, timeout=10
        )
        assert (response.status_code, response.json()) == (status, {"error": error})


def test_load_and_unload_answer_at_once(tools_agent):
    name, engine, agent = tools_agent
    c = client(agent)
    before = None if name == "ollama" else last_request(engine)
    assert c.generate(MODEL, "").done_reason == "load"
    assert c.generate(MODEL, "", keep_alive=0).done_reason == "unload"
    loaded = c.chat(MODEL, [])
    assert loaded.done_reason == "load" and loaded.message.content == ""
    assert c.chat(MODEL, [], keep_alive=0).done_reason == "unload"
    if name != "ollama":
        assert last_request(engine) == before, "a load or unload reached the engine"


def test_embed_dimensions(tools_agent):
    name, _, agent = tools_agent
    if name == "ollama":
        pytest.skip("qwen3 does not embed on the Ollama double")
    out = client(agent).embed(MODEL, ["one", "two"], dimensions=4)
    assert [len(v) for v in out.embeddings] == [4, 4]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in out.embeddings)
    assert out.model == MODEL


def test_generate_context_continues_the_conversation(tools_agent):
    name, engine, agent = tools_agent
    c = client(agent)
    first = c.generate(MODEL, "first question", stream=False)
    assert first.context
    streamed_first = list(c.generate(MODEL, "first question", stream=True))[-1]
    assert streamed_first.context == first.context
    second = c.generate(MODEL, "second question", context=first.context, stream=False)
    assert second.response == "Echo: second question"
    if name != "ollama":
        assert [m["content"] for m in last_request(engine)["messages"]] == [
            "first question",
            "Echo: first question",
            "second question",
        ]


# -- images and fill-in-the-middle (OpenAI-only engines) -------------------------------------------


def test_images_reach_a_vision_engine_and_a_refusal_is_passed_on(agent_factory):
    vision = start_tool_engine("--vision")
    blind = start_tool_engine()
    try:
        agent = agent_factory(vision.url)
        try:
            c = client(agent)
            reply = c.chat(MODEL, [{"role": "user", "content": "what", "images": [PNG]}])
            assert reply.message.content == "Echo: what [1 images]"
            part = last_request(vision)["messages"][0]["content"][1]
            assert part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
            assert c.generate(MODEL, "what", images=[PNG], stream=False).response == (
                "Echo: what [1 images]"
            )
        finally:
            agent.process.stop()
        agent = agent_factory(blind.url)
        try:
            with pytest.raises(ollama.ResponseError) as refused:
                client(agent).chat(MODEL, [{"role": "user", "content": "what", "images": [PNG]}])
            assert refused.value.status_code == 500  # llama.cpp's status, passed on
            assert "image input is not supported" in refused.value.error
        finally:
            agent.process.stop()
    finally:
        vision.stop()
        blind.stop()


@pytest.mark.parametrize("flavour", ["llama.cpp", "vllm"])
def test_suffix_is_fill_in_the_middle(agent_factory, flavour):
    engine = start_tool_engine("--flavour", flavour, "--model", MODEL)
    try:
        agent = agent_factory(engine.url)
        try:
            c = client(agent)
            whole = c.generate(MODEL, "def f(", suffix="    return x", stream=False)
            assert whole.response == "middle of 'def f(' and '    return x'"
            parts = list(c.generate(MODEL, "def f(", suffix="    return x", stream=True))
            assert "".join(p.response for p in parts) == whole.response
            assert parts[-1].done_reason == "stop"
            sent = last_request(engine)
            if flavour == "llama.cpp":
                assert sent["input_prefix"] == "def f(" and sent["input_suffix"] == "    return x"
            else:
                assert sent["suffix"] == "    return x"
        finally:
            agent.process.stop()
    finally:
        engine.stop()


def test_suffix_refused_clearly_on_another_engine(agent_factory):
    """An OpenAI engine that is neither llama.cpp nor vLLM has no fill-in-the-middle."""
    port = free_port()
    recorder = Process([sys.executable, Path(__file__).with_name("recorder_engine.py"), port])
    try:
        recorder.wait_for_url(f"http://127.0.0.1:{port}/v1/models", timeout=20)
        agent = agent_factory(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(ollama.ResponseError) as refused:
                client(agent).generate("rec", "def f(", suffix="    return x")
            assert refused.value.status_code == 501
            assert "suffix (fill-in-the-middle) needs llama.cpp" in refused.value.error
        finally:
            agent.process.stop()
    finally:
        recorder.stop()

"""The agent in front of vLLM 0.10.2's real OpenAI server (the CPU build, a tiny random
Llama: support/vllm.py), with the unmodified `openai` and `ollama` clients.

The model writes gibberish and, by construction, never stops before max_tokens: these tests
check the protocol and the counts, never the words. They assert what must hold on the real
engine; the Ollama translation may add fields (tool calls, thinking, show details).
test_agent_clients.py runs its client tests here too (its `engine` fixture includes the real
vLLM); this module covers what only a real vLLM can say."""

from __future__ import annotations

import json
import subprocess

import httpx
import ollama
import openai
import pytest
from support.vllm import MODEL_NAME

# `agent` (conftest.py): the agent in front of the session's real vLLM server.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("engine", ["vllm-real"], indirect=True)]

PROMPT = [{"role": "user", "content": "hello world"}]
JSON = {"content-type": "application/json"}


def oai(agent) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=agent.url + "/v1", api_key=agent.keys.default, max_retries=0, timeout=60
    )


def oll(agent, key: str | None = None) -> ollama.Client:
    return ollama.Client(host=agent.url, headers=agent.headers(key), timeout=60)


# -- OpenAI API: passed through --------------------------------------------------------------


def test_openai_chat_counts_what_it_wrote(agent):
    reply = oai(agent).chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=6)
    assert reply.object == "chat.completion" and reply.model == MODEL_NAME
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_openai_stream_with_usage(agent):
    chunks = list(
        oai(agent).chat.completions.create(
            model=MODEL_NAME,
            messages=PROMPT,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "length"
    assert len([c for c in with_choices if c.choices[0].delta.content]) >= 2
    # include_usage: one last chunk with no choices and the counts
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_framing_ends_with_done(agent):
    body = {"model": MODEL_NAME, "messages": PROMPT, "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST",
        agent.url + "/v1/chat/completions",
        json=body,
        headers=agent.headers(),
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_openai_completions_and_models(agent):
    client = oai(agent)
    listed = client.models.list().data
    assert [m.id for m in listed] == [MODEL_NAME] and listed[0].owned_by == "vllm"
    reply = client.completions.create(model=MODEL_NAME, prompt="hello", max_tokens=3)
    assert reply.choices[0].text and reply.usage.completion_tokens == 3
    streamed = list(client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=3,
                                              stream=True))  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed)


# -- Ollama API: translated onto vLLM --------------------------------------------------------


def test_ollama_chat_and_its_counters(agent):
    reply = oll(agent).chat(
        model=MODEL_NAME, messages=PROMPT, stream=False, options={"num_predict": 6}
    )
    assert reply.model == MODEL_NAME and reply.done is True
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done_reason == "length"
    assert reply.eval_count == 6 and reply.prompt_eval_count > 0


def test_ollama_chat_streams_ndjson_by_default(agent):
    # No "stream" field: Ollama's default is a stream, one JSON object a line.
    body = {"model": MODEL_NAME, "messages": PROMPT, "options": {"num_predict": 5}}
    out = subprocess.run(
        ["curl", "-sSfN", f"{agent.url}/api/chat", "-H",
         f"Authorization: Bearer {agent.keys.default}", "-d", json.dumps(body)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    objects = [json.loads(line) for line in out.splitlines()]
    # at least one part and the last object: a vLLM that falls behind (a loaded machine)
    # merges the tokens it has into one delta, so the count of parts is its choice
    assert len(objects) >= 2
    assert all(o["done"] is False and o["model"] == MODEL_NAME for o in objects[:-1])
    last = objects[-1]
    assert last["done"] is True and last["done_reason"] == "length" and last["eval_count"] == 5
    assert "".join(o["message"]["content"] for o in objects)


def test_ollama_generate_plain_and_streamed(agent):
    client = oll(agent)
    whole = client.generate(model=MODEL_NAME, prompt="hi", stream=False,
                            options={"num_predict": 4})  # fmt: skip
    assert whole.done is True and whole.response and whole.eval_count == 4
    parts = list(client.generate(model=MODEL_NAME, prompt="hi", stream=True,
                                 options={"num_predict": 4}))  # fmt: skip
    assert parts[-1].done is True and parts[-1].eval_count == 4
    assert len([p for p in parts if p.response]) >= 2


def test_ollama_tags_show_and_ps(agent):
    client = oll(agent)
    assert [m.model for m in client.list().models] == [MODEL_NAME]
    assert [m.model for m in client.ps().models] == [MODEL_NAME]
    assert client.show(MODEL_NAME) is not None
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model")
    assert err.value.status_code == 404


def test_embed_on_a_generative_model_is_an_error_in_each_shape(agent, engine):
    """vLLM serves embeddings only for pooling models: the tiny Llama is not one."""
    with pytest.raises(ollama.ResponseError) as err:
        oll(agent).embed(model=MODEL_NAME, input=["one"])
    assert err.value.status_code == 400 and "Embeddings API" in err.value.error
    direct = httpx.post(engine.url + "/v1/embeddings",
                        json={"model": MODEL_NAME, "input": "one"}, timeout=30)  # fmt: skip
    via = httpx.post(agent.url + "/v1/embeddings", json={"model": MODEL_NAME, "input": "one"},
                     headers=agent.headers(), timeout=30)  # fmt: skip
    assert (via.status_code, via.json()) == (direct.status_code, direct.json())


# -- errors, in the shape each client family parses ------------------------------------------


def test_unknown_model_is_404_for_both_families(agent, engine):
    body = {"model": "no-such-model", "messages": PROMPT, "max_tokens": 2}
    direct = httpx.post(engine.url + "/v1/chat/completions", json=body, timeout=30)
    via = httpx.post(agent.url + "/v1/chat/completions", json=body, headers=agent.headers(),
                     timeout=30)  # fmt: skip
    assert via.status_code == direct.status_code == 404
    assert via.json() == direct.json()
    assert via.json()["error"]["type"] == "NotFoundError"
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        oai(agent).chat.completions.create(model="no-such-model", messages=PROMPT)
    with pytest.raises(ollama.ResponseError) as err:
        oll(agent).chat(model="no-such-model", messages=PROMPT, stream=False)
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    resp = httpx.post(agent.url + "/api/generate", json={**body, "prompt": "x"},
                      headers=agent.headers(), timeout=30)  # fmt: skip
    assert resp.status_code == 404 and isinstance(resp.json()["error"], str)


def test_malformed_bodies_are_400_for_both_families(agent, engine):
    # OpenAI API: vLLM's own validation, passed on as it is
    resp = httpx.post(agent.url + "/v1/chat/completions", content=b'{"model": "x",',
                      headers={**agent.headers(), "content-type": "application/json"},
                      timeout=30)  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"]["message"]
    resp = httpx.post(agent.url + "/v1/chat/completions", json={"model": MODEL_NAME},
                      headers=agent.headers(), timeout=30)  # fmt: skip
    assert resp.status_code == 400 and "messages" in resp.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        oai(agent).chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=10**6)
    # JSON that is no object: vLLM itself fails with a bare 500, the agent says 400
    direct = httpx.post(engine.url + "/v1/chat/completions", content=b"[]", headers=JSON)
    assert (direct.status_code, direct.text) == (500, "Internal Server Error")
    resp = httpx.post(agent.url + "/v1/chat/completions", content=b"[]",
                      headers={**agent.headers(), **JSON}, timeout=30)  # fmt: skip
    assert resp.status_code == 400 and "must be an object" in resp.json()["error"]["message"]
    # vLLM reads only application/json (curl -d sends a form's type): say so in examples
    form = {**agent.headers(), "content-type": "application/x-www-form-urlencoded"}
    resp = httpx.post(agent.url + "/v1/chat/completions", headers=form, timeout=30,
                      content=json.dumps({"model": MODEL_NAME, "messages": PROMPT}))  # fmt: skip
    assert resp.status_code == 400 and "Unsupported Media Type" in resp.json()["error"]["message"]
    # Ollama API: {"error": "..."} whether the agent (not JSON) or vLLM refused it
    resp = httpx.post(agent.url + "/api/chat", content=b'{"model": "x",',
                      headers=agent.headers(), timeout=30)  # fmt: skip
    assert resp.status_code == 400 and isinstance(resp.json()["error"], str)
    too_long = {"num_predict": 10**6}
    for stream in (False, True):  # streamed: vLLM refuses before the stream starts
        with pytest.raises(ollama.ResponseError) as err:
            answer = oll(agent).chat(model=MODEL_NAME, messages=PROMPT, stream=stream,
                                     options=too_long)  # fmt: skip
            list(answer) if stream else answer
        assert err.value.status_code == 400 and "maximum context length" in err.value.error


def test_model_management_is_501(agent):
    admin = agent.headers(agent.keys.admin)
    for method, path in (("POST", "/api/pull"), ("DELETE", "/api/delete")):
        resp = httpx.request(method, agent.url + path, json={"model": MODEL_NAME},
                             headers=admin, timeout=30)  # fmt: skip
        assert resp.status_code == 501 and "binds its model" in resp.json()["error"]
    with pytest.raises(ollama.ResponseError) as err:
        oll(agent, agent.keys.admin).pull(MODEL_NAME)
    assert err.value.status_code == 501


# -- routing by model: the real vLLM and llama.cpp's real server behind one agent ------------


def test_routing_by_model_between_vllm_and_llama_cpp(engine, llama_server, agent_factory,
                                                     tmp_path):  # fmt: skip
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"""
rules:
  - name: tiny-vllm-on-vllm
    match: {{body: {{model: ^{MODEL_NAME}$}}}}
    target: {engine.url}
""")
    agent = agent_factory(llama_server.url, routes_file=str(routes))
    client = oai(agent)
    for model in (MODEL_NAME, llama_server.model):
        reply = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=3)
        assert reply.model == model and reply.choices[0].message.content is not None
    # Only vLLM knows its model and llama.cpp's: asking the other engine would fail.
    served = [oll(agent).chat(model=m, messages=PROMPT, stream=False, options={"num_predict": 3})
              for m in (MODEL_NAME, llama_server.model)]  # fmt: skip
    assert [s.model for s in served] == [MODEL_NAME, llama_server.model]
    assert all(s.done for s in served)

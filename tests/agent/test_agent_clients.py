"""The unmodified `openai` and `ollama` clients, and curl, through the agent.

The same client code runs against every engine (Ollama double, vLLM double, vLLM's and
llama.cpp's real servers); only UV_CUBE_AGENT_TARGET_URL differs. The doubles answer
"Echo: <last user message>", so content is checked exactly there; the real engines' tiny
random models write gibberish, so with them only the protocol is checked.
"""

from __future__ import annotations

import json
import subprocess

import ollama
import openai
import pytest
from support.engines import TINY_MODEL_NAME
from support.vllm import MODEL_NAME as REAL_VLLM_MODEL

PROMPT = "hello world"
ECHO = "Echo: hello world"


def echoes(agent) -> bool:
    return agent.model not in (TINY_MODEL_NAME, REAL_VLLM_MODEL)


def openai_client(agent, prefix: str = "", key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{agent.url}{prefix}/v1",
        api_key=key or agent.keys.default,
        max_retries=0,
        timeout=30,
    )


def ollama_client(agent, key: str | None = None) -> ollama.Client:
    return ollama.Client(host=agent.url, headers=agent.headers(key), timeout=30)


def test_openai_chat(agent):
    reply = openai_client(agent).chat.completions.create(
        model=agent.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=8
    )
    text = reply.choices[0].message.content
    assert text.strip(), "an empty answer"
    if echoes(agent):
        assert text == ECHO
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_openai_chat_stream(agent):
    stream = openai_client(agent).chat.completions.create(
        model=agent.model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        stream=True,
    )
    parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in parts if p]) > 1, "the answer came in one piece: not streamed"
    if echoes(agent):
        assert "".join(parts) == ECHO


def test_openai_models_and_completions(agent):
    client = openai_client(agent)
    assert agent.model in [m.id for m in client.models.list()]
    reply = client.completions.create(model=agent.model, prompt=PROMPT, max_tokens=4)
    assert reply.object == "text_completion" and reply.choices[0].text.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0


def test_openai_under_a_domain_prefix(agent):
    client = openai_client(agent, "/team-a", agent.keys.team_a)
    reply = client.chat.completions.create(
        model=agent.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=8
    )
    assert reply.choices[0].message.content


def test_ollama_chat(agent):
    reply = ollama_client(agent).chat(
        model=agent.model,
        messages=[{"role": "user", "content": PROMPT}],
        stream=False,
        options={"num_predict": 8},
    )
    assert reply.done is True
    assert reply.done_reason in ("stop", "length")
    assert reply.message.role == "assistant"
    if echoes(agent):
        assert reply.message.content == ECHO
    assert reply.eval_count and reply.eval_count > 0


def test_ollama_chat_streams_by_default(agent):
    parts = list(
        ollama_client(agent).chat(
            model=agent.model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            options={"num_predict": 8},
        )
    )
    assert len(parts) > 2
    assert all(p.done is False for p in parts[:-1])
    last = parts[-1]
    assert last.done is True and last.done_reason in ("stop", "length")
    assert last.eval_count and last.eval_count > 0
    if echoes(agent):
        assert "".join(p.message.content for p in parts) == ECHO


def test_ollama_generate(agent):
    client = ollama_client(agent)
    whole = client.generate(
        model=agent.model, prompt=PROMPT, stream=False, options={"num_predict": 8}
    )
    assert whole.done is True and whole.response.strip(), "an empty answer"
    assert whole.eval_count and whole.eval_count > 0
    parts = list(
        client.generate(model=agent.model, prompt=PROMPT, stream=True, options={"num_predict": 8})
    )
    assert parts[-1].done is True and all(p.done is False for p in parts[:-1])
    assert "".join(p.response for p in parts).strip()
    if echoes(agent):
        assert whole.response == ECHO
        assert "".join(p.response for p in parts) == ECHO


def test_ollama_list_and_show(agent):
    client = ollama_client(agent)
    assert agent.model in [m.model for m in client.list().models]
    # A model is running once it has answered (ps() lists only loaded models), whichever
    # test ran before this one.
    client.generate(model=agent.model, prompt=PROMPT, stream=False, options={"num_predict": 1})
    assert agent.model in [m.model for m in client.ps().models]
    shown = client.show(agent.model)
    assert "completion" in shown.capabilities and shown.modified_at is not None
    if agent.model == TINY_MODEL_NAME:
        # llama.cpp's server answers chat under any model name, so show() does too (issue 19:
        # llama-index calls show() before every request)
        assert client.show("no-such-model:1b").capabilities == shown.capabilities
        return
    with pytest.raises(ollama.ResponseError) as unknown:
        client.show("no-such-model:1b")
    assert unknown.value.status_code == 404


def test_curl_stream(agent):
    body = {
        "model": agent.model,
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    out = subprocess.run(
        [
            "curl",
            "-sSfN",
            f"{agent.url}/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {agent.keys.default}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"] for e in events[:-1]]
    assert len(deltas) > 1


def test_curl_ollama_chat_is_ndjson(agent):
    body = {
        "model": agent.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "options": {"num_predict": 8},
    }
    out = subprocess.run(
        [
            "curl",
            "-sSfN",
            f"{agent.url}/api/chat",
            "-H",
            f"Authorization: Bearer {agent.keys.default}",
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    objects = [json.loads(line) for line in out.splitlines()]
    assert objects[-1]["done"] is True and "done_reason" in objects[-1]
    assert all(o["done"] is False for o in objects[:-1])


def test_embeddings_on_ollama_and_openai_engines(ollama_double, agent_factory):
    from support.engines import start_openai_double

    vllm = start_openai_double("--task", "embed", model="nomic-embed-text:v1.5")
    try:
        for url in (ollama_double.url, vllm.url):
            agent = agent_factory(url)
            agent.model = "nomic-embed-text:v1.5"
            out = ollama_client(agent).embed(model=agent.model, input=["one", "two"])
            assert len(out.embeddings) == 2 and len(out.embeddings[0]) > 8
            assert out.embeddings[0] != out.embeddings[1]  # one vector per input
            vec = openai_client(agent).embeddings.create(model=agent.model, input="one")
            # the same engine, model and text through the other API: the same vector
            assert vec.data[0].embedding == pytest.approx(out.embeddings[0], rel=1e-5)
    finally:
        vllm.stop()

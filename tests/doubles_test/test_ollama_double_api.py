"""The Ollama double against the unmodified `ollama` and `openai` clients: if these pass,
code written against real Ollama works against the double."""

from __future__ import annotations

import json
import urllib.request

import httpx
import ollama
import openai
import pytest


def client(engine) -> ollama.Client:
    return ollama.Client(host=engine.url, timeout=10)


def test_lists_shows_and_deletes_pulled_models(ollama_double):
    c = client(ollama_double)
    names = {m.model for m in c.list().models}
    assert names == {"llama3.2:3b", "nomic-embed-text:v1.5"}

    shown = c.show("llama3.2:3b")
    assert shown.details.family == "llama"
    assert "completion" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] > 0

    c.delete("llama3.2:3b")
    assert {m.model for m in c.list().models} == {"nomic-embed-text:v1.5"}
    with pytest.raises(ollama.ResponseError) as e:
        c.delete("llama3.2:3b")
    assert e.value.status_code == 404
    assert e.value.error == "model 'llama3.2:3b' not found"


def test_pull_streams_progress_then_success(ollama_double):
    c = client(ollama_double)
    steps = list(c.pull("starcoder2:3b", stream=True))
    statuses = [s.status for s in steps]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [s for s in steps if s.digest]
    assert layers and all(s.status == "pulling " + s.digest[7:19] for s in layers)
    assert any(s.completed == s.total > 0 for s in layers)
    assert "starcoder2:3b" in {m.model for m in c.list().models}


def test_pull_without_stream_answers_once_and_names_get_a_tag(ollama_double):
    c = client(ollama_double)
    assert c.pull("qwen2.5", stream=False).status == "success"
    assert "qwen2.5:latest" in {m.model for m in c.list().models}


def test_pull_rejects_an_invalid_name(ollama_double):
    with pytest.raises(ollama.ResponseError) as e:
        client(ollama_double).pull("not a model!", stream=False)
    assert e.value.status_code == 400


def test_chat_answers_in_one_object(ollama_double):
    r = client(ollama_double).chat(
        model="llama3.2:3b", messages=[{"role": "user", "content": "why is the sky blue"}]
    )
    assert r.message.role == "assistant"
    assert r.message.content == "Echo: why is the sky blue"
    assert r.done is True
    assert r.done_reason == "stop"
    assert r.eval_count == 6
    assert r.prompt_eval_count == 5
    assert r.total_duration > 0


def test_chat_streams_by_default_as_ndjson(ollama_double):
    body = json.dumps(
        {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "one two three"}]}
    ).encode()
    request = urllib.request.Request(ollama_double.url + "/api/chat", data=body)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        parts = [json.loads(line) for line in response]
    assert len(parts) == 5
    assert all(p["done"] is False for p in parts[:-1])
    assert "".join(p["message"]["content"] for p in parts) == "Echo: one two three"
    last = parts[-1]
    assert last["done"] is True
    assert last["done_reason"] == "stop"
    for counter in ("total_duration", "load_duration", "prompt_eval_count", "eval_count"):
        assert last[counter] > 0


def test_chat_stream_through_the_client(ollama_double):
    parts = list(
        client(ollama_double).chat(
            model="llama3.2:3b", messages=[{"role": "user", "content": "a b"}], stream=True
        )
    )
    assert "".join(p.message.content for p in parts) == "Echo: a b"
    assert parts[-1].done and parts[-1].eval_count == 3


def test_generate_plain_streamed_and_cut_by_num_predict(ollama_double):
    c = client(ollama_double)
    assert c.generate(model="llama3.2:3b", prompt="hello world").response == "Echo: hello world"
    streamed = list(c.generate(model="llama3.2:3b", prompt="hello world", stream=True))
    assert "".join(p.response for p in streamed) == "Echo: hello world"
    short = c.generate(model="llama3.2:3b", prompt="hello world", options={"num_predict": 2})
    assert short.response == "Echo: hello"
    assert short.done_reason == "length"


def test_unpulled_model_is_404_with_ollamas_message(ollama_double):
    c = client(ollama_double)
    for call in (
        lambda: c.chat(model="mistral", messages=[{"role": "user", "content": "x"}]),
        lambda: list(
            c.chat(model="mistral", messages=[{"role": "user", "content": "x"}], stream=True)
        ),
        lambda: c.generate(model="mistral", prompt="x"),
        lambda: c.embed(model="mistral", input="x"),
    ):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404
        assert e.value.error == 'model "mistral" not found, try pulling it first'


def test_embedding_model_refuses_chat(ollama_double):
    with pytest.raises(ollama.ResponseError) as e:
        client(ollama_double).chat(
            model="nomic-embed-text:v1.5", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 400


def test_embeddings_are_deterministic_unit_vectors(ollama_double):
    c = client(ollama_double)
    r = c.embed(model="nomic-embed-text:v1.5", input=["alpha", "beta", "alpha"])
    a, b, a_again = r.embeddings
    assert len(a) == 768
    assert a == a_again != b
    assert abs(sum(v * v for v in a) - 1) < 1e-3
    legacy = c.embeddings(model="nomic-embed-text:v1.5", prompt="alpha").embedding
    assert len(legacy) == 768


def test_ps_lists_models_used(ollama_double):
    c = client(ollama_double)
    assert c.ps().models == []
    c.generate(model="llama3.2:3b", prompt="x")
    assert [m.model for m in c.ps().models] == ["llama3.2:3b"]


def test_root_and_version(ollama_double):
    r = httpx.get(ollama_double.url + "/")
    assert r.text == "Ollama is running"
    assert httpx.get(ollama_double.url + "/api/version").json()["version"].startswith("0.12")


def test_unknown_route_is_404(ollama_double):
    assert httpx.get(ollama_double.url + "/api/nothing").status_code == 404


def test_bad_json_is_400_with_an_error_body(ollama_double):
    r = httpx.post(ollama_double.url + "/api/chat", content=b"{nope")
    assert r.status_code == 400
    assert "error" in r.json()


# -- Ollama's OpenAI-compatible API, with the unmodified openai client


def oai(engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0)


def test_openai_models_and_chat(ollama_double):
    c = oai(ollama_double)
    assert {m.id for m in c.models.list()} == {"llama3.2:3b", "nomic-embed-text:v1.5"}
    r = c.chat.completions.create(
        model="llama3.2:3b", messages=[{"role": "user", "content": "hi there"}]
    )
    assert r.choices[0].message.content == "Echo: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 3


def test_openai_chat_stream_ends_with_done_and_usage(ollama_double):
    c = oai(ollama_double)
    chunks = list(
        c.chat.completions.create(
            model="llama3.2:3b",
            messages=[{"role": "user", "content": "hi there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Echo: hi there"
    assert chunks[-1].usage.total_tokens == 5
    raw = httpx.post(
        ollama_double.url + "/v1/chat/completions",
        json={
            "model": "llama3.2:3b",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_openai_completions_embeddings_and_unknown_model(ollama_double):
    c = oai(ollama_double)
    r = c.completions.create(model="llama3.2:3b", prompt="a b c", max_tokens=2)
    assert r.choices[0].text == "Echo: a"
    assert r.choices[0].finish_reason == "length"
    e = c.embeddings.create(model="nomic-embed-text:v1.5", input=["x", "y"])
    assert [d.index for d in e.data] == [0, 1]
    assert len(e.data[0].embedding) == 768
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])

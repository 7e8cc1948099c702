"""The vLLM double against the unmodified `openai` client, and its command line."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest
from support.engines import OPENAI_DOUBLE, VLLM_MODEL, start_openai_double


def oai(engine, key="unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key=key, max_retries=0, timeout=10)


def ask(text="hi there"):
    return {"model": VLLM_MODEL, "messages": [{"role": "user", "content": text}]}


def test_health_version_and_models(openai_double):
    health = httpx.get(openai_double.url + "/health")
    assert health.status_code == 200
    assert health.content == b""
    assert httpx.get(openai_double.url + "/version").json() == {"version": "0.10.2"}
    models = oai(openai_double).models.list().data
    assert [m.id for m in models] == [VLLM_MODEL]
    assert models[0].owned_by == "vllm"


def test_chat_plain(openai_double):
    r = oai(openai_double).chat.completions.create(**ask("what is up"))
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "Echo: what is up"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 4)


def test_chat_stream_with_usage_and_done(openai_double):
    chunks = list(
        oai(openai_double).chat.completions.create(
            **ask("a b"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: a b"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3
    raw = httpx.post(openai_double.url + "/v1/chat/completions", json={**ask(), "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.splitlines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert "usage" not in raw.text  # only when stream_options asks for it


def test_completions_plain_streamed_and_cut(openai_double):
    c = oai(openai_double)
    r = c.completions.create(model=VLLM_MODEL, prompt="one two", max_tokens=2)
    assert r.choices[0].text == "Echo: one"
    assert r.choices[0].finish_reason == "length"
    streamed = c.completions.create(model=VLLM_MODEL, prompt="one two", stream=True)
    assert "".join(ch.choices[0].text for ch in streamed) == "Echo: one two"


def test_unknown_model_is_vllms_404(openai_double):
    r = httpx.post(openai_double.url + "/v1/chat/completions", json={**ask(), "model": "gpt-4"})
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "The model `gpt-4` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    }
    with pytest.raises(openai.NotFoundError):
        oai(openai_double).chat.completions.create(**{**ask(), "model": "gpt-4"})


def test_bad_requests_are_400(openai_double):
    url = openai_double.url + "/v1/chat/completions"
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, json={"model": VLLM_MODEL}).status_code == 400
    too_long = httpx.post(url, json={**ask(), "max_tokens": 5000})
    assert too_long.status_code == 400
    assert "maximum context length is 2048 tokens" in too_long.json()["error"]["message"]
    # as vLLM 0.10.2: only application/json is read; a body that is no object is its 500
    as_text = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert as_text.status_code == 400 and "Unsupported Media Type" in as_text.text
    listed = httpx.post(url, content=b"[1]", headers={"content-type": "application/json"})
    assert (listed.status_code, listed.text) == (500, "Internal Server Error")


def test_flags_are_recorded_and_max_model_len_applies():
    engine = start_openai_double("--gpu-memory-utilization", "0.85", "--max-model-len", "1024")
    try:
        model = httpx.get(engine.url + "/v1/models").json()["data"][0]
        assert model["max_model_len"] == 1024
        log = engine.process.output()
        assert "'gpu_memory_utilization': 0.85" in log
        assert "'max_model_len': 1024" in log
        r = httpx.post(
            engine.url + "/v1/completions",
            json={"model": VLLM_MODEL, "prompt": "x", "max_tokens": 1024},
        )
        assert "maximum context length is 1024 tokens" in r.json()["error"]["message"]
    finally:
        engine.stop()


def test_embeddings_only_for_an_embedding_task(openai_double):
    # vLLM 0.10.2 answers this error with status 200
    r = httpx.post(openai_double.url + "/v1/embeddings", json={"model": VLLM_MODEL, "input": "x"})
    assert r.status_code == 200
    assert r.json()["error"]["message"] == "The model does not support Embeddings API"
    engine = start_openai_double("--task", "embed")
    try:
        # The openai client asks for base64 by default and decodes it.
        r = oai(engine).embeddings.create(model=VLLM_MODEL, input=["x", "y", "x"])
        x, y, x_again = (d.embedding for d in r.data)
        assert len(x) == 384
        assert x == pytest.approx(x_again) and x != pytest.approx(y)
        floats = oai(engine).embeddings.create(model=VLLM_MODEL, input="x", encoding_format="float")
        assert floats.data[0].embedding == pytest.approx(x)
    finally:
        engine.stop()


def test_api_key_is_enforced():
    engine = start_openai_double("--api-key", "s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            oai(engine, key="wrong").models.list()
        assert oai(engine, key="s3cret").models.list().data[0].id == VLLM_MODEL
        assert httpx.get(engine.url + "/health").status_code == 200  # health needs no key
    finally:
        engine.stop()


def test_cli_version_and_missing_model():
    run = [sys.executable, OPENAI_DOUBLE]
    assert (
        subprocess.run(
            [*run, "--version"], capture_output=True, text=True, timeout=15
        ).stdout.strip()
        == "0.10.2"
    )
    missing = subprocess.run([*run, "serve"], capture_output=True, text=True, timeout=15)
    assert missing.returncode != 0
    assert "model is required" in missing.stderr


def test_faults_delay_cut_and_hang():
    slow = start_openai_double("--chunk-delay", "0.2")
    try:
        started = time.monotonic()
        list(oai(slow).chat.completions.create(**ask("a"), stream=True))
        assert time.monotonic() - started >= 0.8  # role, 2 words, finish, [DONE]
    finally:
        slow.stop()
    cut = start_openai_double("--cut-after", "1")
    try:
        with pytest.raises(openai.APIError):
            list(oai(cut).chat.completions.create(**ask(), stream=True))
    finally:
        cut.stop()
    hung = start_openai_double("--hang-after", "0")
    try:
        with pytest.raises(openai.APITimeoutError):
            openai.OpenAI(
                base_url=hung.url + "/v1", api_key="x", max_retries=0, timeout=1
            ).chat.completions.create(**ask())
        assert httpx.get(hung.url + "/health").status_code == 200
    finally:
        hung.stop()


def test_malformed_breaks_the_json(monkeypatch):
    engine = start_openai_double(env={"VLLM_DOUBLE_MALFORMED": "1"})
    try:
        r = httpx.post(engine.url + "/v1/chat/completions", json=ask())
        with pytest.raises(ValueError):
            r.json()
    finally:
        engine.stop()


def test_dialogpt_chat_needs_a_chat_template_as_in_vllm():
    """The image's default model only chats because vllm.service passes --chat-template."""
    engine = start_openai_double("--chat-template", "")
    try:
        client = openai.OpenAI(base_url=engine.url + "/v1", api_key="none")
        with pytest.raises(openai.BadRequestError, match="chat template"):
            client.chat.completions.create(
                model=VLLM_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        # Completions need no template.
        assert client.completions.create(model=VLLM_MODEL, prompt="hi").choices[0].text
    finally:
        engine.process.stop()

"""llama.cpp's real server with the tiny generated model answers the OpenAI API: the
sandbox and the llama.cpp image rely on this pair."""

from __future__ import annotations

import httpx
import openai


def oai(engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_tiny_model_is_small_gguf(tiny_model):
    data = tiny_model.read_bytes()
    assert data[:4] == b"GGUF"
    assert 100_000 < len(data) < 2_000_000


def test_serves_the_tiny_model(llama_server):
    assert httpx.get(llama_server.url + "/health").status_code == 200
    assert [m.id for m in oai(llama_server).models.list().data] == ["tiny"]


def test_chat_plain_and_streamed(llama_server):
    c = oai(llama_server)
    messages = [{"role": "user", "content": "hello"}]
    r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8
    chunks = list(
        c.chat.completions.create(model="tiny", messages=messages, max_tokens=8, stream=True)
    )
    assert chunks
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason in ("stop", "length")

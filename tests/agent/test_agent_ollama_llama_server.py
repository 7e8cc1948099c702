"""The translated Ollama API against llama.cpp's real server (the tiny random model).

The model writes gibberish and calls no tools, so this checks what the real engine accepts
and tells: the tool-loop history it used to refuse ("Missing tool call type"), `think`,
`context`, /api/show from its /props, and its own refusals (infill without FIM tokens,
images without --mmproj) passed on with its status.
"""

from __future__ import annotations

import base64

import ollama
import pytest

# llama.cpp's server answers under any model name; the client's comes back.
NAME = "some-model:latest"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HISTORY = [
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"},
]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def client(llama_server, module_keys):
    from support.agent import start_agent_process

    url, process, _ = start_agent_process(
        llama_server.url, timeout=20, key_file=str(module_keys.file)
    )
    try:
        yield ollama.Client(
            host=url, headers={"Authorization": f"Bearer {module_keys.default}"}, timeout=60
        )
    finally:
        process.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_tool_loop_history_is_accepted(client, stream):
    reply = client.chat(NAME, HISTORY, tools=[WEATHER], stream=stream, options={"num_predict": 4})
    last = list(reply)[-1] if stream else reply
    assert last.done is True and last.done_reason in ("stop", "length")
    assert last.model == NAME


@pytest.mark.parametrize("think", [True, False])
def test_think_is_accepted(client, think):
    reply = client.chat(
        NAME, [{"role": "user", "content": "hi"}], think=think, options={"num_predict": 4}
    )
    assert reply.done is True


def test_show_tells_the_engines_context_for_any_name(client):
    shown = client.show(NAME)
    assert shown.modelinfo["llama.cpp.context_length"] == 512  # --ctx-size
    assert shown.capabilities == ["completion"]  # its template takes no tools
    assert "<|im_start|>" in shown.template
    assert [m.model for m in client.list().models] == ["tiny"]


def test_generate_context_goes_back_in(client):
    first = client.generate(NAME, "hello", options={"num_predict": 3})
    assert first.context
    second = client.generate(NAME, "again", context=first.context, options={"num_predict": 3})
    assert second.done is True and len(second.context) > len(first.context)


def test_load_and_unload(client):
    assert client.generate(NAME, "").done_reason == "load"
    assert client.chat(NAME, [], keep_alive=0).done_reason == "unload"


def test_the_engines_refusals_are_passed_on(client):
    with pytest.raises(ollama.ResponseError) as infill:
        client.generate(NAME, "def f(", suffix="    return 1")
    assert infill.value.status_code == 501
    assert "Infill is not supported by this model" in infill.value.error
    with pytest.raises(ollama.ResponseError) as image:
        client.chat(NAME, [{"role": "user", "content": "what", "images": [PNG]}])
    assert image.value.status_code == 500
    assert "image input is not supported" in image.value.error


def test_libraries_written_for_ollama(client):
    """llama-index reads the context window from show() before it asks; langchain-ollama
    and litellm get answers in their own types."""
    import litellm
    from langchain_ollama import ChatOllama
    from llama_index.llms.ollama import Ollama

    host = str(client._client.base_url).rstrip("/")
    headers = {"Authorization": client._client.headers["authorization"]}
    llm = Ollama(model=NAME, base_url=host, headers=headers, request_timeout=60)
    assert llm.metadata.context_window == 512
    assert isinstance(llm.complete("hi", num_predict=4).text, str)
    chat = ChatOllama(model=NAME, base_url=host, num_predict=4, client_kwargs={"headers": headers})
    assert isinstance(chat.bind_tools([WEATHER]).invoke("weather in Paris?").content, str)
    reply = litellm.completion(
        model="ollama_chat/" + NAME,
        api_base=host,
        api_key=headers["Authorization"].removeprefix("Bearer "),
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
    )
    assert isinstance(reply.choices[0].message.content, str)

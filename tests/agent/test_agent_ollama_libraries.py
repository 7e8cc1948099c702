"""Libraries written for Ollama, unmodified, through the agent: langchain-ollama
(`bind_tools` + invoke, reasoning), litellm `ollama_chat/` (a two-turn tool loop) and
llama-index's Ollama LLM (show() for the context window, chat, tools).

`tools_agent` puts the agent in front of the Ollama double and of tool_engine.py as
llama.cpp's server and as vLLM answer; the same code must pass in front of each.
"""

from __future__ import annotations

import pytest
from support.engines import TOOL_MODEL as MODEL

ASK_WEATHER = 'call get_weather with {"city": "Paris", "days": 2}'


def get_weather(city: str, days: int) -> str:
    """The weather in a city for the next days.

    Args:
        city: the city
        days: how many days
    """
    return f"sunny in {city} for {days} days"


def test_langchain_bind_tools_invoke(tools_agent):
    from langchain_ollama import ChatOllama

    _, _, agent = tools_agent
    llm = ChatOllama(model=MODEL, base_url=agent.url, client_kwargs={"headers": agent.headers()})
    message = llm.bind_tools([get_weather]).invoke(ASK_WEATHER)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris", "days": 2})
    ]
    streamed = [
        c for chunk in llm.bind_tools([get_weather]).stream(ASK_WEATHER) for c in chunk.tool_calls
    ]
    assert [(c["name"], c["args"]) for c in streamed] == [
        ("get_weather", {"city": "Paris", "days": 2})
    ]


def test_langchain_reasoning(tools_agent):
    from langchain_ollama import ChatOllama

    _, _, agent = tools_agent
    llm = ChatOllama(
        model=MODEL,
        base_url=agent.url,
        reasoning=True,
        client_kwargs={"headers": agent.headers()},
    )
    message = llm.invoke("why")
    assert message.content == "Echo: why"
    assert message.additional_kwargs["reasoning_content"] == "thinking about: why"


def test_litellm_two_turn_tool_loop(tools_agent):
    import litellm

    name, _, agent = tools_agent
    if name == "vllm":
        pytest.skip(
            "vLLM does not say whether it parses tool calls (--enable-auto-tool-choice), so "
            "/api/show has no template mentioning tools and litellm uses its prompt-based tools"
        )
    key = agent.headers()["Authorization"].removeprefix("Bearer ")
    tools = [
        {
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
    ]
    messages: list = [{"role": "user", "content": ASK_WEATHER}]
    common = {"model": "ollama_chat/" + MODEL, "api_base": agent.url, "api_key": key}
    first = litellm.completion(messages=messages, tools=tools, **common)
    calls = first.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris", "days": 2}')
    ]
    messages.append(first.choices[0].message.model_dump())
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "18 degrees"})
    second = litellm.completion(messages=messages, tools=tools, **common)
    assert second.choices[0].message.content == "tool said: 18 degrees"


def test_llama_index_ollama_llm(tools_agent):
    from llama_index.core.llms import ChatMessage
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.ollama import Ollama

    name, _, agent = tools_agent
    llm = Ollama(
        model=MODEL,
        base_url=agent.url,
        headers=agent.headers(),
        request_timeout=30,
        thinking=False,
    )
    # show() before the first request, for the model's context window
    assert llm.metadata.context_window == (40960 if name == "ollama" else 4096)
    reply = llm.chat([ChatMessage(role="user", content="hello")])
    assert reply.message.content == "Echo: hello"
    streamed = "".join(r.delta or "" for r in llm.stream_complete("hello"))
    assert streamed == "Echo: hello"
    response = llm.chat_with_tools([FunctionTool.from_defaults(fn=get_weather)], ASK_WEATHER)
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 2})
    ]

"""Guardrails with a real engine: llama.cpp's server and the tiny random-weight model.

The rails' own calls go to the engine the agent fronts. The tiny model answers gibberish,
which NeMo's Yes/No parser reads as "block": so the rule this shows is that the rails ask
the real engine, and that an answer the rails cannot read fails closed, as a well-formed
refusal (never a 500)."""

import openai
import pytest
from cube_agent.guardrails import DEFAULT_CONFIG_DIR
from guardrails_support import start_agent

pytestmark = pytest.mark.usefixtures("needs_nemoguardrails")

REFUSAL = "I'm sorry, I can't help with that request."


def engine_chats(llama_server) -> int:
    """Generations llama.cpp's server has started so far (one log line per task)."""
    return llama_server.process.output().count("launch_slot_")


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_rails_judge_with_llama_cpp_and_fail_closed(llama_server, stream):
    agent = start_agent(llama_server.url, DEFAULT_CONFIG_DIR, engine="openai")
    try:
        client = openai.OpenAI(base_url=agent.url + "/v1", api_key="unused", max_retries=0)
        before = engine_chats(llama_server)
        answer = client.chat.completions.create(
            model=llama_server.model,
            messages=[{"role": "user", "content": "card 4111 1111 1111 1111"}],
            max_tokens=8,
            stream=stream,
        )
        if stream:
            chunks = [c for c in answer if c.choices]
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
        calls = engine_chats(llama_server) - before
    finally:
        agent.stop()
    if finish == "content_filter":
        assert text == REFUSAL
        # Blocked on input (1 call: the self-check), or on output (3: input check, chat,
        # output check).
        assert calls in (1, 3)
    else:
        assert finish in ("stop", "length") and calls == 3

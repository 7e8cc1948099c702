"""The Guardrails stage with the real nemoguardrails package, the shipped default
configuration, and the judge engine answering the self-check prompts."""

import asyncio
import socket
import sys

import pytest
from cube_agent import guardrails
from cube_agent.config import ConfigError
from cube_agent.errors import AgentError
from cube_agent.guardrails import DEFAULT_CONFIG_DIR, Guardrails
from prometheus_client import CollectorRegistry

CARD = "4111 1111 1111 1111"

# NeMo 0.24 warns about its own deprecated fields on every config load.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.usefixtures("needs_nemoguardrails"),
]


@pytest.fixture
def rails(fresh_judge):
    return Guardrails(DEFAULT_CONFIG_DIR, fresh_judge.url, CollectorRegistry())


# One loop for the module, as in the agent: NeMo's HTTP client binds to the loop it
# first ran on.
LOOP = asyncio.new_event_loop()
run = LOOP.run_until_complete


def test_card_number_is_masked_before_anything_sees_it(rails, fresh_judge):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": f"charge {CARD} please"},
    ]
    verdict = run(rails.check_input(messages, "judge"))
    assert not verdict.blocked
    assert verdict.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "charge <CREDIT_CARD> please"},
    ]
    # The self-check call went to the engine's OpenAI API, with the masked text only.
    received = fresh_judge.received()
    assert [r["path"] for r in received] == ["/v1/chat/completions"]
    assert received[0]["body"]["model"] == "judge"
    assert "charge <CREDIT_CARD> please" in received[0]["raw"]
    assert "1111" not in received[0]["raw"]


def test_history_is_masked_too_and_checked_once(rails, fresh_judge):
    first = [{"role": "user", "content": "mail me at jane@example.com"}]
    run(rails.check_input(first, "judge"))
    assert len(fresh_judge.self_checks()) == 1
    # The client replays its unmasked history with a new turn.
    second = [
        *first,
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    verdict = run(rails.check_input(second, "judge"))
    assert verdict.messages[0]["content"] == "mail me at <EMAIL_ADDRESS>"
    assert verdict.messages[2]["content"] == "and now?"
    assert len(fresh_judge.self_checks()) == 2  # only the new turn was judged


def test_content_parts_are_masked(rails):
    messages = [{"role": "user", "content": [{"type": "text", "text": f"card {CARD}"}]}]
    verdict = run(rails.check_input(messages, "judge"))
    assert verdict.messages[0]["content"] == [{"type": "text", "text": "card <CREDIT_CARD>"}]


def test_clean_input_is_allowed_unchanged(rails, fresh_judge):
    verdict = run(rails.check_input([{"role": "user", "content": "hello"}], "judge"))
    assert not verdict.blocked and verdict.messages is None
    assert 'User message: "hello"' in fresh_judge.self_checks()[0]


def test_jailbreak_is_blocked_by_self_check_input(rails):
    verdict = run(rails.check_input([{"role": "user", "content": "BLOCK_ME: ignore it"}], "j"))
    assert verdict.blocked
    assert verdict.rail == "self check input"
    assert verdict.refusal == "I'm sorry, I can't help with that request."


def test_a_blocked_turn_in_history_still_blocks(rails):
    messages = [
        {"role": "user", "content": "BLOCK_ME"},
        {"role": "assistant", "content": "no"},
        {"role": "user", "content": "hello"},
    ]
    assert run(rails.check_input(messages, "judge")).blocked


def test_output_is_masked_and_blocked(rails, fresh_judge):
    masked = run(rails.check_output("reach bob@example.com", None, "judge"))
    assert masked.text == "reach <EMAIL_ADDRESS>" and not masked.blocked
    blocked = run(rails.check_output("here is BLOCK_ME", None, "judge"))
    assert blocked.blocked and blocked.rail == "self check output"
    assert 'Assistant message: "here is BLOCK_ME"' in fresh_judge.self_checks()[-1]
    fine = run(rails.check_output("fine", None, "judge"))
    assert not fine.blocked and fine.text is None


def test_engine_down_fails_closed_with_502():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    rails = Guardrails(DEFAULT_CONFIG_DIR, dead, CollectorRegistry())
    with pytest.raises(AgentError) as err:
        run(rails.check_input([{"role": "user", "content": "hi"}], "judge"))
    assert err.value.status == 502
    assert "input check could not run" in err.value.message


def test_no_model_is_a_client_error(rails):
    with pytest.raises(AgentError) as err:
        run(rails.check_input([{"role": "user", "content": "hi"}], None))
    assert err.value.status == 400


def test_missing_or_broken_config_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"UV_CUBE_AGENT_GUARDRAILS_CONFIG=.*no config\.yml"):
        Guardrails(tmp_path, "http://127.0.0.1:1", CollectorRegistry())
    (tmp_path / "config.yml").write_text("rails: [not, a, mapping\n")
    with pytest.raises(ConfigError, match="UV_CUBE_AGENT_GUARDRAILS_CONFIG="):
        Guardrails(tmp_path, "http://127.0.0.1:1", CollectorRegistry())


def test_a_config_without_output_rails_skips_them(tmp_path, fresh_judge):
    (tmp_path / "config.yml").write_text("rails:\n  input:\n    flows: []\n")
    rails = Guardrails(tmp_path, fresh_judge.url, CollectorRegistry())
    assert not rails.has_input and not rails.has_output
    assert run(rails.check_output("BLOCK_ME", None, "judge")).text is None
    assert fresh_judge.received() == []


def test_judges_per_model_are_bounded(rails, monkeypatch):
    """Model names come from clients: the rails keep a few judges, not one per name."""
    monkeypatch.setattr(guardrails, "MAX_JUDGES", 2)
    for n in range(3):
        run(rails.check_input([{"role": "user", "content": f"hi {n}"}], f"model-{n}"))
    assert list(rails._rails) == ["model-1", "model-2"]


def test_guardrails_on_without_nemoguardrails_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nemoguardrails", None)  # makes the import fail
    with pytest.raises(ConfigError, match="nemoguardrails is not installed"):
        Guardrails(DEFAULT_CONFIG_DIR, "http://127.0.0.1:1", CollectorRegistry())


def test_an_answer_too_large_to_judge_is_a_502_and_closes_the_engine_stream(fresh_judge):
    """The output rails judge the whole answer: it is held at most max_answer bytes (the
    proxy's bound on any answer it holds), not whatever the engine streams."""
    from starlette.responses import StreamingResponse

    rails = Guardrails(DEFAULT_CONFIG_DIR, fresh_judge.url, CollectorRegistry(), max_answer=4096)
    sent, closed = [], []

    async def engine_stream():
        try:
            for _ in range(1000):  # 1 MB, a KiB an event
                sent.append(1)
                yield b"data: " + b"x" * 1018 + b"\n\n"
        finally:
            closed.append(True)

    async def forward(_: bytes):
        return StreamingResponse(engine_stream(), media_type="text/event-stream")

    body = b'{"model": "judge", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    with pytest.raises(AgentError) as err:
        run(rails.guard("openai", body, forward))
    assert err.value.status == 502
    assert closed == [True] and len(sent) < 10

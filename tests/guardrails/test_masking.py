"""The default configuration's local masking: what it hides and what it must leave alone."""

import importlib.util

import pytest
from cube_agent.guardrails import DEFAULT_CONFIG_DIR

pytestmark = pytest.mark.usefixtures("needs_nemoguardrails")


def load_actions():
    """The shipped actions.py, loaded from its file as NeMo loads it."""
    spec = importlib.util.spec_from_file_location("actions", DEFAULT_CONFIG_DIR / "actions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def actions():
    return load_actions()


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",  # Visa test number
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",  # Mastercard test number
        "378282246310005",  # Amex, 15 digits
    ],
)
def test_luhn_valid_card_numbers_are_masked(actions, card):
    assert actions.mask(f"pay with {card} today") == "pay with <CREDIT_CARD> today"


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111112",  # fails the Luhn check
        "1234 5678 9012",  # too short
        "order 20260101123456789012",  # 22 digits: an id, not a card
    ],
)
def test_other_numbers_are_left_alone(actions, number):
    assert actions.mask(number) == number


def test_email_addresses_are_masked(actions):
    text = "write to jane.doe+cvm@mail.example.co.uk or bob@example.com."
    assert actions.mask(text) == "write to <EMAIL_ADDRESS> or <EMAIL_ADDRESS>."


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
        "ghp_" + "a1B2c3D4e5" * 4,
        "AKIAIOSFODNN7EXAMPLE",
        "hf_" + "x" * 34,
    ],
)
def test_api_keys_are_masked(actions, key):
    assert actions.mask(f"my key is {key} ok") == "my key is <API_KEY> ok"


def test_bearer_tokens_keep_their_scheme(actions):
    assert actions.mask("Authorization: Bearer abcdef0123456789abcdef") == (
        "Authorization: Bearer <API_KEY>"
    )


def test_ordinary_text_is_unchanged(actions):
    text = "Explain sk-learn's API and call me at 555-0100 on 2026-11-27."
    assert actions.mask(text) == text

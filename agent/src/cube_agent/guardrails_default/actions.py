"""Sensitive-data masking for the Cube agent's default guardrails.

NeMo Guardrails' own sensitive-data rails need Presidio and a spaCy model, which an
air-gapped CVM cannot download; these regular expressions need nothing. NeMo loads this
file from the configuration directory and registers the action below.
"""

import re

from nemoguardrails.actions import action

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13 to 19 digits, optionally grouped by single spaces or hyphens; Luhn decides.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
API_KEY = re.compile(
    r"\b(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r")"
    # key=value and "Bearer …" forms: keep the name, mask the value.
    r"|(?<=\bBearer )[A-Za-z0-9._~+/-]{16,}=*"
    r"|(?<=api_key=)[^\s\"',;]{8,}|(?<=apikey=)[^\s\"',;]{8,}",
    re.IGNORECASE,
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "<CREDIT_CARD>" if luhn_valid(digits) else match.group()


def mask(text: str) -> str:
    """Replace e-mail addresses, card numbers and API keys by placeholders."""
    text = API_KEY.sub("<API_KEY>", text)
    text = EMAIL.sub("<EMAIL_ADDRESS>", text)
    return CARD.sub(_mask_card, text)


@action(name="mask_sensitive_text", is_system_action=True)
async def mask_sensitive_text(text: str | None = None) -> str | None:
    return mask(text) if text else text

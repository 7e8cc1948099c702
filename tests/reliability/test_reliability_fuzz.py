"""Fuzzing the agent with schemathesis: every operation of its OpenAPI schema (operations,
attestation, and the proxied OpenAI and Ollama APIs with and without a /{domain} prefix),
with valid and schema-violating input, without a key, with a wrong key, a domain key and an
admin key, against both engine doubles (the Ollama API is translated on the OpenAI one).

Properties: no 5xx (the engine is up, so not even 502/504; 501 only where documented), a
JSON error body for every error, 401 without a valid key wherever a key is needed, 403 for
a non-admin key on admin operations and for a key outside its domain. Bounded for CI by
FUZZ_EXAMPLES (examples per operation and generation mode, default 40: ~6000 requests in
~30 s) and derandomized so that a failure reproduces (FUZZ_RANDOM=1 for fresh inputs)."""

from __future__ import annotations

import os
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from cube_agent.keys import RESERVED_DOMAINS
from cube_agent.paths import PathError, canonical_path
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from reliability_support import EngineOnPort, bearer, start_agent
from schemathesis import GenerationMode

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# FUZZ_RANDOM=1: new inputs every run (a longer hunt); by default the same inputs each run.
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "") in ("", "0")
CALLERS = ("no key", "wrong key", "default key", "admin key")
# /attestation: a relying party verifies the agent before it sends a key (docs/attestation.md)
NO_KEY_NEEDED = {"/health", "/ready", "/attestation"}
ADMIN_ONLY = {"/metrics", "/admin/routes", "/api/pull", "/api/delete"}
# 501 is documented: no TEE on this machine; an OpenAI engine has no Ollama pulls.
NOT_IMPLEMENTED = {
    "any": {"/attestation"},
    "openai": {"/api/pull", "/api/delete"},
}
# Requests sent, by schema and engine: quoted in the issue note.
SENT: Counter[str] = Counter()


@pytest.fixture(scope="module", params=["ollama", "openai"])
def fuzzed(request, keys, tmp_path_factory):
    kind = request.param
    engine = EngineOnPort(kind, models_dir=tmp_path_factory.mktemp("models")).start()
    agent = None
    try:
        # no TEE here: the attestation endpoint answers its documented 501
        tsm = tmp_path_factory.mktemp("no-tee") / "absent"
        agent = start_agent(engine.url, keys, engine="auto", tsm_root=str(tsm))
        yield kind, agent
    finally:
        if agent is not None:
            agent.stop()
        engine.stop()


def headers_for(caller: str, keys) -> dict[str, str]:
    return {
        "no key": {},
        "wrong key": bearer("cube_" + "x" * 43),
        "default key": bearer(keys.default),
        "admin key": bearer(keys.admin),
    }[caller]


def content_type(resp) -> str:
    """schemathesis' Response keeps every header as a list of values."""
    for name, values in resp.headers.items():
        if name.lower() == "content-type":
            return values[0] if isinstance(values, list) else values
    return ""


def check_response(kind: str, keys, case, caller: str, resp) -> None:
    template = case.operation.path  # e.g. /{domain}/v1/models
    where = f"{case.method} {case.formatted_path} as {caller}: {resp.status_code} {resp.text[:300]}"
    bare = template.removeprefix("/{domain}")
    allowed_501 = NOT_IMPLEMENTED["any"] | NOT_IMPLEMENTED.get(kind, set())
    assert resp.status_code < 500 or (resp.status_code == 501 and bare in allowed_501), where
    domain = (case.path_parameters or {}).get("domain")
    # "/v1/v1/models" is no domain route but an unknown /v1 path, which the agent forwards
    # (with the same key checks): a 404 is the engine's own (Ollama's is plain text).
    reserved = domain in RESERVED_DOMAINS
    if resp.status_code >= 400 and not reserved:
        assert content_type(resp).startswith("application/json"), where
        body = resp.json()
        assert isinstance(body, dict) and ("error" in body or body.get("object") == "error"), where
    if not is_canonical(urlsplit(resp.request.url).path.encode()):
        # Refused before any key is looked at, whoever asks (issue 14, paths.py).
        assert resp.status_code == 400, where
        return
    if template in NO_KEY_NEEDED:
        return
    sent = resp.request.headers.get("Authorization")
    if sent != headers_for(caller, keys).get("Authorization"):
        caller = "wrong key"  # negative mode sends a broken Authorization of its own
    if caller in ("no key", "wrong key"):
        assert resp.status_code == 401, where
    elif caller == "default key":
        if bare in ADMIN_ONLY:
            assert resp.status_code == 403, where
        if domain is not None and domain != "default" and not reserved:
            assert resp.status_code in (403, 404), where


def is_canonical(raw: bytes) -> bool:
    try:
        canonical_path(raw)
    except PathError:
        return False
    return True


def fuzz(kind: str, agent, schema, label: str) -> dict[str, set[str]]:
    """Run every operation of `schema` in both generation modes; return, for each operation,
    the callers it was sent with in positive mode (valid input, so the key checks decide)."""
    operations = [result.ok() for result in schema.get_all_operations()]
    callers: dict[str, set[str]] = {f"{op.method.upper()} {op.path}": set() for op in operations}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=DERANDOMIZE,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=operation.as_strategy(generation_mode=mode), caller=st.sampled_from(CALLERS)
            )
            def run(case, caller):
                resp = case.call(
                    base_url=agent.url, headers=headers_for(caller, agent.keys), timeout=30
                )
                SENT[f"{label} on {kind}"] += 1
                # run() is called below, in this iteration: the loop variables are current
                if mode == GenerationMode.POSITIVE:  # noqa: B023
                    callers[f"{case.operation.method.upper()} {case.operation.path}"].add(caller)
                check_response(kind, agent.keys, case, caller, resp)

            try:
                run()
            except Unsatisfiable:
                # nothing to get wrong (GET /health has no parameters and no body)
                assert mode == GenerationMode.NEGATIVE, operation.label
    return callers


def test_fuzz_every_operation_of_the_agents_schema(fuzzed):
    kind, agent = fuzzed
    schema = schemathesis.openapi.from_url(agent.url + "/openapi.json")
    callers = fuzz(kind, agent, schema, "agent schema")
    done = set(callers)
    # every published operation was fuzzed: operations, attestation and the proxied APIs
    assert {
        "GET /health",
        "GET /metrics",
        "GET /admin/routes",
        "POST /attestation",
        "POST /v1/chat/completions",
        "POST /{domain}/api/chat",
        "POST /api/pull",
    } <= done
    # and each with valid input from every caller: no key, a wrong one, a domain key, admin
    assert {op: sent for op, sent in callers.items() if sent != set(CALLERS)} == {}
    assert agent.in_flight() == 0 and agent.process.alive()
    # the agent still answers a plain request after the storm
    resp = httpx.get(agent.url + "/v1/models", headers=bearer(agent.keys.default), timeout=10)
    assert resp.status_code == 200


def test_zz_report_requests_fuzzed():
    """Prints the request counts (pytest -s) for the issue note."""
    for label, count in sorted(SENT.items()):
        print(f"fuzzed: {count} requests, {label}")
    # Alone (pytest -k zz) it has nothing to report: it proves nothing, by design.

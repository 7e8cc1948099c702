"""What operators and tools read from the agent: metrics that count proxied requests,
chunks and failures, 405 for a method the API does not have, and a schema that lists
every operation, the proxied ones included (schemathesis and client generators use it)."""

from __future__ import annotations

import re

import httpx

CHAT = {"model": "microsoft/DialoGPT-medium", "messages": [{"role": "user", "content": "a b c"}]}


def metric(text: str, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{re.escape(v)}"' for k, v in labels.items())
    line = rf"^{name}" + (rf"\{{{inner}\}}" if labels else "") + r" (\S+)$"
    found = re.search(line, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_proxied_requests_streams_and_refusals(openai_double, agent_factory):
    agent = agent_factory(openai_double.url)
    h = agent.headers()
    assert httpx.post(agent.url + "/v1/chat/completions", json=CHAT, headers=h).status_code == 200
    with httpx.stream(
        "POST", agent.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=h
    ) as resp:
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert resp.status_code == 200 and len(events) >= 3
    assert httpx.get(agent.url + "/team-b/v1/models", headers=h).status_code == 403
    assert httpx.get(agent.url + "/v1/models").status_code == 401

    text = httpx.get(agent.url + "/metrics", headers=agent.headers(agent.keys.admin)).text
    total = "cube_agent_requests_total"
    assert metric(text, total, route="/v1/chat/completions", status="200") == 2
    assert metric(text, total, route="/v1/models", status="403") == 1  # domain prefix dropped
    assert metric(text, total, route="/v1/models", status="401") == 1
    # every chunk the engine sent was counted, at least one per event the client got
    chunks = metric(text, "cube_agent_stream_chunks_total", route="/v1/chat/completions")
    assert 1 <= chunks <= len(events) + 1
    count = "cube_agent_request_duration_seconds_count"
    assert metric(text, count, route="/v1/chat/completions") == 2
    assert metric(text, "cube_agent_requests_in_flight") == 1  # the scrape itself


def test_a_method_the_api_does_not_have_is_405_json(openai_double, agent_factory):
    agent = agent_factory(openai_double.url)
    for path in ("/v1/chat/completions", "/api/chat", "/team-a/v1/models"):
        resp = httpx.request("PUT", agent.url + path, json=CHAT, headers=agent.headers())
        assert resp.status_code == 405, path
        assert "error" in resp.json() and resp.headers["x-request-id"]


def test_the_schema_lists_the_proxied_operations(openai_double, agent_factory):
    agent = agent_factory(openai_double.url)
    paths = httpx.get(agent.url + "/openapi.json").json()["paths"]
    for method, path in (
        ("post", "/v1/chat/completions"),
        ("get", "/v1/models"),
        ("post", "/api/chat"),
        ("delete", "/api/delete"),
        ("get", "/health"),
        ("get", "/metrics"),
    ):
        for prefix in ("", "/{domain}") if path.startswith(("/v1/", "/api/")) else ("",):
            assert method in paths.get(prefix + path, {}), f"{method.upper()} {prefix}{path}"
    # and each listed proxy operation is served (not 404/405) with a valid key
    h = agent.headers()
    assert httpx.get(agent.url + "/v1/models", headers=h).status_code == 200
    assert httpx.get(agent.url + "/default/v1/models", headers=h).status_code == 200


def test_one_process_metrics_read_as_prometheus_clients_own_would():
    """The single-process metrics are plain numbers turned into families at scrape time:
    what a scraper reads must equal what prometheus_client's metric objects give for the
    same requests (bucket bounds inclusive, cumulative buckets, count, sum, in flight)."""
    from cube_agent import metrics as m
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    ours = m.Metrics()
    registry = CollectorRegistry()
    requests = Counter(*m.REQUESTS, ["route", "status"], registry=registry)
    latency = Histogram(*m.LATENCY, ["route"], buckets=m.BUCKETS, registry=registry)
    in_flight = Gauge(*m.IN_FLIGHT, registry=registry)
    chunks = Counter(*m.CHUNKS, ["route"], registry=registry)
    seen = [
        ("/v1/models", 200, 0.001),  # on a bound: counted in that bucket
        ("/v1/models", 200, 0.0011),
        ("/v1/models", 401, 0.0),
        ("/api/chat", 200, 7.5),
        ("/api/chat", 502, 601.0),  # past the last bound: +Inf only
    ]
    for _ in range(6):  # one still being answered
        ours.started()
        in_flight.inc()
    for route, status, seconds in seen:
        ours.observe(route, status, seconds)
        in_flight.dec()
        requests.labels(route, str(status)).inc()
        latency.labels(route).observe(seconds)
    ours.add_chunks("/api/chat", 4)
    ours.add_chunks("/api/chat", 0)
    chunks.labels("/api/chat").inc(4)

    def samples(text: str) -> set[tuple]:
        return {
            (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created") and "upstream_errors" not in s.name
        }

    expected = samples(generate_latest(registry).decode())
    assert samples(ours.exposition().decode()) == expected
    assert ("cube_agent_requests_in_flight", (), 1.0) in expected

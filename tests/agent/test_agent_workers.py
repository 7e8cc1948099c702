"""Several worker processes (UV_CUBE_AGENT_WORKERS): requests spread over them, and
`/metrics`, whichever worker answers it, counts every request once (Prometheus
multiprocess mode). About 5 s."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from support.timing import wait_until

BATCH = 40


def counted(text: str, route: str) -> float:
    line = rf'^cube_agent_requests_total\{{route="{re.escape(route)}",status="200"\}} (\S+)$'
    found = re.search(line, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_add_up_over_workers(openai_double, agent_factory, tmp_path: Path, monkeypatch):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    agent = agent_factory(openai_double.url, workers="2", engine="openai")
    admin = agent.headers(agent.keys.admin)

    def models(_: int) -> int:  # a new connection each time: the kernel picks the worker
        return httpx.get(agent.url + "/v1/models", headers=agent.headers(), timeout=10).status_code

    def pids() -> set[str]:  # each worker keeps its values in files named by its pid
        return {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}

    # Batches until both workers have served some: which worker accepts is the kernel's
    # choice, and on a busy machine one may take a whole batch.
    sent = 0
    with ThreadPoolExecutor(8) as pool:

        def batch() -> bool:
            nonlocal sent
            assert set(pool.map(models, range(BATCH))) == {200}
            sent += BATCH
            return len(pids()) == 2

        wait_until(batch, 30, "both workers serving", interval=0)
    assert len(pids()) == 2, sorted(p.name for p in metrics_dir.iterdir())
    # every scrape, whichever worker answers it, counts all of them exactly once
    for _ in range(6):
        text = httpx.get(agent.url + "/metrics", headers=admin, timeout=10).text
        assert counted(text, "/v1/models") == sent
        assert "cube_agent_requests_in_flight 1.0" in text  # the scrape itself

    agent.process.stop()
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))  # stopped workers left the sums

    # a restart on the same directory starts from zero (the old files are not counted again)
    agent = agent_factory(openai_double.url, workers="2", engine="openai")
    assert models(0) == 200
    text = httpx.get(agent.url + "/metrics", headers=admin, timeout=10).text
    assert counted(text, "/v1/models") == 1


def test_workers_made_their_own_metrics_directory_and_removed_it(
    openai_double, agent_factory, monkeypatch
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    agent = agent_factory(openai_double.url, workers="2", engine="openai")
    assert httpx.get(agent.url + "/v1/models", headers=agent.headers()).status_code == 200
    text = httpx.get(agent.url + "/metrics", headers=agent.headers(agent.keys.admin)).text
    assert counted(text, "/v1/models") == 1
    made = re.findall(r"/\S*cube-agent-metrics-\w+", agent.output())
    agent.process.stop()
    assert made and not Path(made[0]).exists()

"""Every error a client can get: status, JSON shape (OpenAI for /v1, Ollama for /api)."""

from __future__ import annotations

import httpx
import pytest
from support import free_port
from support.engines import start_ollama_double
from support.timing import wait_until

CHAT = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["message"]
    return err


def ollama_error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert isinstance(err, str) and err
    return err


# -- authentication and domains ------------------------------------------------------------


@pytest.mark.parametrize("engine", ["ollama"], indirect=True)
class TestKeys:
    def test_missing_and_invalid_keys_are_401(self, agent):
        for headers in (
            {},
            {"Authorization": "Bearer cube_not-a-key"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ):
            resp = httpx.get(agent.url + "/v1/models", headers=headers)
            openai_error(resp, 401)
            assert resp.headers["www-authenticate"] == "Bearer"
            ollama_error(httpx.get(agent.url + "/api/tags", headers=headers), 401)

    def test_a_key_is_confined_to_its_domains(self, agent):
        k = agent.keys
        assert (
            httpx.get(agent.url + "/team-a/v1/models", headers=agent.headers(k.team_a)).status_code
            == 200
        )
        assert (
            httpx.get(agent.url + "/team-a/api/tags", headers=agent.headers(k.team_a)).status_code
            == 200
        )
        err = openai_error(
            httpx.get(agent.url + "/v1/models", headers=agent.headers(k.team_a)), 403
        )
        assert "default" in err["message"]
        openai_error(
            httpx.get(agent.url + "/team-b/v1/models", headers=agent.headers(k.team_a)), 403
        )
        ollama_error(httpx.get(agent.url + "/api/tags", headers=agent.headers(k.team_a)), 403)
        openai_error(
            httpx.get(agent.url + "/team-a/v1/models", headers=agent.headers(k.default)), 403
        )
        # a key for every domain
        assert (
            httpx.get(agent.url + "/team-b/v1/models", headers=agent.headers(k.admin)).status_code
            == 200
        )

    def test_admin_endpoints_need_an_admin_key(self, agent):
        k = agent.keys
        for path in ("/metrics", "/admin/routes"):
            openai_error(httpx.get(agent.url + path), 401)
            openai_error(httpx.get(agent.url + path, headers=agent.headers(k.default)), 403)
            assert httpx.get(agent.url + path, headers=agent.headers(k.admin)).status_code == 200
        # model management changes the shared engine: admin only
        ollama_error(
            httpx.post(agent.url + "/api/pull", json={"model": "x"}, headers=agent.headers()), 403
        )
        # so does vLLM's runtime LoRA loading, under any domain prefix
        for path in ("/v1/load_lora_adapter", "/default/v1/unload_lora_adapter"):
            lora = {"lora_name": "x", "lora_path": "/tmp/x"}
            openai_error(httpx.post(agent.url + path, json=lora, headers=agent.headers()), 403)
            assert httpx.post(agent.url + path, json=lora).status_code == 401

    def test_health_and_ready_need_no_key(self, agent):
        assert httpx.get(agent.url + "/health").json() == {"status": "ok"}
        assert httpx.get(agent.url + "/ready").status_code == 200

    def test_unknown_paths_are_404_json(self, agent):
        openai_error(httpx.get(agent.url + "/nope", headers=agent.headers()), 404)
        ollama_error(httpx.post(agent.url + "/api/nope", headers=agent.headers()), 404)

    def test_request_id_comes_back_on_errors_too(self, agent):
        resp = httpx.get(agent.url + "/v1/models", headers={"X-Request-ID": "r-1"})
        assert resp.status_code == 401 and resp.headers["x-request-id"] == "r-1"


def test_auth_off_is_explicit_and_logged(ollama_double, agent_factory):
    agent = agent_factory(ollama_double.url, auth="off")
    assert httpx.get(agent.url + "/v1/models").status_code == 200
    assert "authentication is OFF" in agent.output()


def test_a_new_key_works_without_a_restart(ollama_double, agent_factory, keys):
    from cube_agent.keys import KeyFile

    agent = agent_factory(ollama_double.url)
    kf = KeyFile.load(keys.file)
    new = kf.add("late", ["default"])
    kf.save()
    wait_until(  # the agent stats the key file at most once a second
        lambda: httpx.get(agent.url + "/v1/models", headers=agent.headers(new)).status_code == 200,
        3,
        "the new key accepted",
    )
    kf.remove("late")
    kf.save()


# -- the engine misbehaves -----------------------------------------------------------------


def test_engine_refusing_connections_is_502(agent_factory):
    agent = agent_factory(f"http://127.0.0.1:{free_port()}")
    err = openai_error(
        httpx.post(agent.url + "/v1/chat/completions", json=CHAT, headers=agent.headers()), 502
    )
    assert "unreachable" in err["message"]
    ollama_error(httpx.post(agent.url + "/api/chat", json=CHAT, headers=agent.headers()), 502)
    assert httpx.get(agent.url + "/ready").status_code == 503
    metrics = httpx.get(agent.url + "/metrics", headers=agent.headers(agent.keys.admin)).text
    assert 'cube_agent_upstream_errors_total{kind="unreachable"' in metrics


def test_engine_timeout_is_504(tmp_path, agent_factory):
    hung = start_ollama_double(tmp_path / "m", "--hang-after", "0", pull=("llama3.2:3b",))
    try:
        agent = agent_factory(hung.url, read_timeout="1")
        err = openai_error(
            httpx.post(
                agent.url + "/v1/chat/completions", json=CHAT, headers=agent.headers(), timeout=10
            ),
            504,
        )
        assert "timed out" in err["message"]
        ollama_error(
            httpx.post(agent.url + "/api/chat", json=CHAT, headers=agent.headers(), timeout=10), 504
        )
    finally:
        hung.stop()


def test_engine_errors_are_passed_on(ollama_double, openai_double, agent_factory):
    unknown = {**CHAT, "model": "no-such-model"}
    for engine in (ollama_double, openai_double):
        agent = agent_factory(engine.url)
        direct = httpx.post(engine.url + "/v1/chat/completions", json=unknown)
        via = httpx.post(agent.url + "/v1/chat/completions", json=unknown, headers=agent.headers())
        assert (via.status_code, via.json()) == (direct.status_code, direct.json())
        assert via.status_code == 404
        # Ollama API: passed through from Ollama, translated from vLLM's error
        message = ollama_error(
            httpx.post(agent.url + "/api/chat", json=unknown, headers=agent.headers()), 404
        )
        assert "no-such-model" in message


def test_a_stream_cut_by_the_engine_is_an_error_not_a_short_answer(tmp_path, agent_factory):
    import ollama
    import openai

    cut = start_ollama_double(tmp_path / "m", "--cut-after", "2", pull=("llama3.2:3b",))
    try:
        agent = agent_factory(cut.url)
        client = ollama.Client(host=agent.url, headers=agent.headers())
        with pytest.raises(ollama.ResponseError, match="the engine"):
            list(client.chat(model="llama3.2:3b", messages=CHAT["messages"], stream=True))
        oa = openai.OpenAI(base_url=agent.url + "/v1", api_key=agent.keys.default, max_retries=0)
        with pytest.raises(openai.APIError):
            list(
                oa.chat.completions.create(
                    model="llama3.2:3b", messages=CHAT["messages"], stream=True
                )
            )
        assert httpx.get(agent.url + "/api/tags", headers=agent.headers()).status_code == 200
    finally:
        cut.stop()


# -- bad requests --------------------------------------------------------------------------


def test_body_limit_is_413(ollama_double, agent_factory):
    agent = agent_factory(ollama_double.url, max_body_bytes="1000")
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    openai_error(
        httpx.post(agent.url + "/v1/chat/completions", json=big, headers=agent.headers()), 413
    )
    ollama_error(httpx.post(agent.url + "/api/chat", json=big, headers=agent.headers()), 413)

    def chunked():  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * 100

    openai_error(
        httpx.post(agent.url + "/v1/chat/completions", content=chunked(), headers=agent.headers()),
        413,
    )
    assert (
        httpx.post(
            agent.url + "/v1/chat/completions", json=CHAT, headers=agent.headers()
        ).status_code
        == 200
    )


def test_malformed_json_is_400_with_the_parse_error(openai_double, agent_factory):
    agent = agent_factory(openai_double.url)  # Ollama API on vLLM: the agent parses the body
    message = ollama_error(
        httpx.post(agent.url + "/api/chat", content=b'{"model": "m",', headers=agent.headers()),
        400,
    )
    assert "malformed JSON" in message and "line 1" in message


def test_model_management_on_an_openai_engine_is_501(openai_double, agent_factory):
    agent = agent_factory(openai_double.url)
    admin = agent.headers(agent.keys.admin)
    for method, path in (("POST", "/api/pull"), ("DELETE", "/api/delete")):
        message = ollama_error(
            httpx.request(method, agent.url + path, json={"model": "x"}, headers=admin), 501
        )
        assert "binds its model at start-up" in message


def test_model_management_on_ollama_is_passed_through(ollama_double, agent_factory):
    import ollama

    agent = agent_factory(ollama_double.url)
    client = ollama.Client(host=agent.url, headers=agent.headers(agent.keys.admin))
    progress = [p.status for p in client.pull("starcoder2:3b", stream=True)]
    assert progress[0] == "pulling manifest" and progress[-1] == "success"
    assert "starcoder2:3b" in [m.model for m in client.list().models]
    client.delete("starcoder2:3b")
    assert "starcoder2:3b" not in [m.model for m in client.list().models]


def test_an_error_answered_with_200_is_still_an_error(openai_double, agent_factory):
    """vLLM 0.10.2 refuses embeddings from a generative model with status 200 and an error
    object (the double does the same): Ollama clients get the error, not empty vectors."""
    import ollama

    agent = agent_factory(openai_double.url)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=agent.url, headers=agent.headers()).embed(
            model=openai_double.model, input=["one"]
        )
    assert err.value.status_code == 400
    assert err.value.error == "The model does not support Embeddings API"


def test_json_that_is_not_an_object_is_400_not_the_engines_500(openai_double, agent_factory):
    """vLLM 0.10.2 (and the double, as it) answer valid JSON that is no object with a bare
    500; every OpenAI operation takes an object, so the agent refuses it first."""
    agent = agent_factory(openai_double.url)
    headers = {**agent.headers(), "content-type": "application/json"}
    direct = httpx.post(openai_double.url + "/v1/chat/completions", content=b"[]", headers=headers)
    assert direct.status_code == 500
    for body in (b"[]", b' "text"', b"1", b"null"):
        err = openai_error(
            httpx.post(agent.url + "/v1/chat/completions", content=body, headers=headers), 400
        )
        assert "must be an object" in err["message"]
    ok = httpx.post(agent.url + "/v1/chat/completions", headers=headers,
                    content=b' \n{"model": "%s", "messages": [{"role": "user", "content": "x"}]}'
                    % openai_double.model.encode())  # fmt: skip
    assert ok.status_code == 200

"""The Ollama double's HTTP layer as gin, gin-contrib/cors and Ollama's own middleware make
it in 0.12.3 (server/routes.go GenerateRoutes, allowedHostsMiddleware; envconfig)."""

from __future__ import annotations

import http.client
import socket
import sys

import httpx
import pytest
from support import Process, free_port
from support.engines import OLLAMA_DOUBLE, start_ollama_double


def request(engine, method, path, headers=None, body=None):
    """One raw request, headers exactly as given (no client adds Host or Origin)."""
    host, port = engine.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in {"Host": f"{host}:{port}", **(headers or {})}.items():
            if value is not None:
                conn.putheader(key, value)
        data = body or b""
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


# -- routing


def test_unknown_routes_and_wrong_methods(ollama_double):
    status, headers, body = request(ollama_double, "GET", "/api/nothing")
    assert (status, body) == (404, b"404 page not found")
    assert header_values(headers, "Content-Type") == ["text/plain"]
    for method, path, allow in (
        ("POST", "/api/tags", "HEAD, GET"),
        ("GET", "/api/chat", "POST"),
        ("HEAD", "/api/ps", "GET"),
        ("PUT", "/api/delete", "DELETE"),
        ("DELETE", "/v1/models/llama3.2:3b", "GET"),
    ):
        status, headers, body = request(ollama_double, method, path)
        assert status == 405, (method, path)
        assert header_values(headers, "Allow") == [allow]
        if method != "HEAD":
            assert body == b"405 method not allowed"


def test_a_trailing_slash_is_redirected(ollama_double):
    status, headers, _ = request(ollama_double, "GET", "/api/tags/")
    assert (status, header_values(headers, "Location")) == (301, ["/api/tags"])
    status, headers, _ = request(ollama_double, "POST", "/api/chat/")
    assert (status, header_values(headers, "Location")) == (307, ["/api/chat"])


def test_head_where_ollama_registers_it(ollama_double):
    for path in ("/", "/api/version", "/api/tags"):
        status, _, body = request(ollama_double, "HEAD", path)
        assert (status, body) == (200, b""), path


def test_chunked_request_bodies_are_read(ollama_double):
    def body():
        yield b'{"model": "llama3.2:3b", '
        yield b'"prompt": "chunked", "stream": false}'

    r = httpx.post(ollama_double.url + "/api/generate", content=body())
    assert r.json()["response"] == "Echo: chunked"


def test_http11_without_a_host_header_is_400(ollama_double):
    status, _, body = request(ollama_double, "GET", "/api/version", {"Host": None})
    assert (status, body) == (400, b"400 Bad Request: missing required Host header")


# -- CORS


def test_origins_outside_the_allowed_list_are_403(ollama_double):
    for origin in ("http://evil.example", "https://localhost.evil.example", "null"):
        status, headers, body = request(ollama_double, "GET", "/api/tags", {"Origin": origin})
        assert (status, body) == (403, b""), origin
        assert not header_values(headers, "Access-Control-Allow-Origin")


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:3000",
        "https://127.0.0.1:8443",
        "http://0.0.0.0:1",
        "app://obsidian.md",
        "vscode-webview://abc",
    ],
)
def test_default_origins_are_allowed_with_cors_headers(ollama_double, origin):
    status, headers, _ = request(ollama_double, "GET", "/api/tags", {"Origin": origin})
    assert status == 200
    assert header_values(headers, "Access-Control-Allow-Origin") == [origin]
    assert header_values(headers, "Vary") == ["Origin"]


def test_same_origin_is_not_a_cors_request(ollama_double):
    host = ollama_double.url.removeprefix("http://")
    status, headers, _ = request(ollama_double, "GET", "/api/tags", {"Origin": f"http://{host}"})
    assert status == 200 and not header_values(headers, "Access-Control-Allow-Origin")


def test_preflight_is_204_with_the_allowed_methods_and_headers(ollama_double):
    status, headers, body = request(
        ollama_double,
        "OPTIONS",
        "/api/chat",
        {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert (status, body) == (204, b"")
    assert header_values(headers, "Access-Control-Allow-Origin") == ["http://localhost:5173"]
    assert header_values(headers, "Access-Control-Allow-Methods") == [
        "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    ]
    allowed = header_values(headers, "Access-Control-Allow-Headers")[0].split(",")
    assert {"Authorization", "Content-Type", "X-Stainless-Retry-Count"} <= set(allowed)
    assert header_values(headers, "Access-Control-Max-Age") == ["43200"]
    assert header_values(headers, "Vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]
    denied, _, _ = request(
        ollama_double, "OPTIONS", "/api/chat", {"Origin": "https://evil.example"}
    )
    assert denied == 403


def test_ollama_origins_adds_to_the_defaults(tmp_path):
    engine = start_ollama_double(
        tmp_path, env={"OLLAMA_ORIGINS": "https://app.example,https://*.corp.example"}
    )
    try:
        for origin, status in (
            ("https://app.example", 200),
            ("https://a.corp.example", 200),
            ("http://localhost:8080", 200),
            ("https://other.example", 403),
        ):
            assert request(engine, "GET", "/api/tags", {"Origin": origin})[0] == status, origin
    finally:
        engine.stop()
    star = start_ollama_double(tmp_path, env={"OLLAMA_ORIGINS": "*"})
    try:
        status, headers, _ = request(star, "GET", "/api/tags", {"Origin": "https://any.example"})
        assert status == 200
        assert header_values(headers, "Access-Control-Allow-Origin") == ["*"]
    finally:
        star.stop()


def test_a_bad_origin_setting_stops_the_server(tmp_path):
    port = free_port()
    with Process(
        [sys.executable, OLLAMA_DOUBLE, "serve"],
        env={
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": str(tmp_path),
            "OLLAMA_ORIGINS": "example.com",
        },
    ) as server:
        assert server.popen.wait(timeout=15) != 0
        assert "bad origin: origins must contain '*' or include http://,https://" in server.output()


# -- the Host check of a loopback listener


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:11434",
        "ollama.localhost",
        "box.local",
        "svc.internal",
        "10.1.2.3",
        "192.168.1.1:80",
        "[::1]:11434",
        "0.0.0.0",
        socket.gethostname(),
        "",
    ],
)
def test_local_host_names_and_addresses_are_let_through(ollama_double, host):
    status, _, body = request(ollama_double, "GET", "/api/version", {"Host": host})
    assert (status, body) == (200, b'{"version":"0.12.3"}'), host


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:11434", "8.8.8.8", "localhost.evil"]
)
def test_other_host_headers_are_403_on_a_loopback_listener(ollama_double, host):
    status, _, body = request(ollama_double, "GET", "/api/version", {"Host": host})
    assert (status, body) == (403, b""), host


def test_a_local_host_name_answers_preflight_itself(ollama_double):
    status, _, _ = request(ollama_double, "OPTIONS", "/api/chat", {"Host": "localhost"})
    assert status == 204
    status, headers, _ = request(ollama_double, "OPTIONS", "/api/chat")  # by IP: on to the router
    assert status == 405 and header_values(headers, "Allow") == ["POST"]


def test_a_listener_on_every_address_checks_no_host(tmp_path):
    port = free_port()
    with Process(
        [sys.executable, OLLAMA_DOUBLE, "serve"],
        env={"OLLAMA_HOST": f"0.0.0.0:{port}", "OLLAMA_MODELS": str(tmp_path)},
    ) as server:
        server.wait_for_url(f"http://127.0.0.1:{port}/api/version", timeout=15)
        r = httpx.get(f"http://127.0.0.1:{port}/api/version", headers={"Host": "evil.example"})
        assert r.status_code == 200

"""The router in process: rule order, every match kind, forwarded paths, shared upstreams and
the one-line errors of a bad routes file. test_agent_routing.py shows the same over HTTP with
two real engines; these run fast enough for every mutant in `make mutation`."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from cube_agent.config import ConfigError, load_settings
from cube_agent.errors import AgentError
from cube_agent.routing import Router, _Linear, _regex, _repeats
from starlette.datastructures import Headers
from support.timing import scaled

DEFAULT = "http://127.0.0.1:11434"


def router(*rules: dict, **settings) -> Router:
    return Router(load_settings(target_url=DEFAULT, auth=False, **settings), list(rules))


def rule(name: str, target: str = "http://10.0.0.1:8000", **spec) -> dict:
    return {"name": name, "target": target, **spec}


def route(r: Router, path: str = "/v1/chat/completions", *, method: str = "POST", domain="default",
          headers: dict | None = None, query: dict | None = None, body=None):  # fmt: skip
    """(target URL, forwarded path, rule name) for one request."""

    def parse():
        if isinstance(body, Exception):
            raise body
        return body

    upstream, forwarded, name = r.route(
        method, path, domain, Headers(headers or {}), query or {}, parse
    )
    return upstream.url, forwarded, name


def test_highest_priority_first_ties_in_file_order_and_no_priority_is_0():
    r = router(
        rule("negative", priority=-1),
        rule("zero", match={"path": "chat"}),
        rule("one-a", priority=1, match={"path": "chat"}),
        rule("one-b", priority=1, match={"path": "chat"}),
        rule("five", priority=5, match={"headers": {"x-team": "^blue$"}}),
    )
    assert [x.name for x in r.rules] == ["five", "one-a", "one-b", "zero", "negative"]
    assert route(r, headers={"X-Team": "blue"})[2] == "five"
    assert route(r)[2] == "one-a"
    assert route(r, "/api/tags", method="GET")[2] == "negative"


def test_no_rule_matches_the_default_target():
    r = router(rule("chat-only", match={"path": "^/v1/chat/"}))
    assert route(r, "/v1/models", method="GET") == (DEFAULT, "/v1/models", None)
    assert router().rules == [] and route(router()) == (DEFAULT, "/v1/chat/completions", None)


def test_path_is_searched_and_methods_are_upper_cased():
    r = router(rule("r", match={"path": "chat/comp", "methods": ["post", "Put"]}))
    assert route(r)[2] == "r"
    assert route(r, method="PUT")[2] == "r"
    assert route(r, method="GET")[2] is None
    assert route(r, "/v1/completions")[2] is None


def test_domain_headers_and_query_must_all_hold():
    r = router(
        rule(
            "r",
            match={
                "domain": "^team-a$",
                "headers": {"X-Team": "^blue$", "x-tier": "gold"},
                "query": {"variant": "^b$"},
            },
        )
    )
    good = {"domain": "team-a", "headers": {"x-team": "blue", "X-Tier": "gold!"}}
    assert route(r, **good, query={"variant": "b"})[2] == "r"
    assert route(r, **good, query={"variant": "bb"})[2] is None
    assert route(r, **good, query={})[2] is None
    assert route(r, **{**good, "domain": "team-ab"}, query={"variant": "b"})[2] is None
    for headers in ({"x-team": "blue"}, {"x-team": "green", "x-tier": "gold"}):
        assert route(r, domain="team-a", headers=headers, query={"variant": "b"})[2] is None


def test_body_fields_match_as_strings_and_only_a_json_object_matches():
    r = router(rule("r", match={"body": {"model": "^tiny", "n": "^2$"}}))
    assert route(r, body={"model": "tiny-1", "n": 2})[2] == "r"
    assert route(r, body={"model": "tiny-1", "n": "2"})[2] == "r"
    assert route(r, body={"model": "tiny-1"})[2] is None
    assert route(r, body={"model": "big", "n": 2})[2] is None
    assert route(r, body=["tiny", 2])[2] is None
    assert route(r, body=None)[2] is None
    assert r.needs_body and not router(rule("p", match={"path": "x"})).needs_body


def test_the_body_is_parsed_only_for_a_rule_with_a_body_condition_that_otherwise_matches():
    boom = AssertionError("body parsed")
    r = router(
        rule("by-path", priority=2, match={"path": "^/v1/models$"}),
        rule("by-body", priority=1, match={"path": "^/v1/chat/", "body": {"model": "x"}}),
    )
    assert route(r, "/v1/models", body=boom)[2] == "by-path"
    assert route(r, "/api/tags", body=boom)[2] is None
    with pytest.raises(AssertionError, match="body parsed"):
        route(r, body=boom)


def test_strip_prefix_and_a_target_with_a_base_path():
    r = router(rule("r", target="http://10.0.0.2:9000/base/", strip_prefix="/engine-b"))
    assert route(r, "/engine-b/v1/models") == ("http://10.0.0.2:9000/base", "/v1/models", "r")
    assert route(r, "/engine-b") == ("http://10.0.0.2:9000/base", "/", "r")
    sent = "".join(["/engine", "-b"])  # a path from a request is its own str, equal not same
    assert route(r, sent)[1] == "/"
    assert route(r, "/v1/engine-b/x")[1] == "/v1/engine-b/x"  # only a leading prefix
    assert route(r, "/api/tags")[1] == "/api/tags"  # a path without it: as sent
    assert route(r, "/engine-a")[1] == "/engine-a"
    assert route(router(rule("n")), "/engine-b/v1")[1] == "/engine-b/v1"


def test_one_upstream_per_target_and_its_engine_declared_once():
    r = router(
        rule("a", target="http://10.0.0.1:8000/"),
        rule("b", target="http://10.0.0.1:8000", engine="openai"),
        rule("c", target=DEFAULT + "/", engine="ollama"),
    )
    assert set(r.upstreams) == {"http://10.0.0.1:8000", DEFAULT}
    assert r.rules[0].upstream is r.rules[1].upstream
    assert r.rules[0].upstream.kind == "openai" and r.rules[0].upstream.configured == "openai"
    assert r.rules[2].upstream is r.default and r.default.kind == "ollama"
    with pytest.raises(ConfigError, match="declared both openai and ollama"):
        router(rule("a", engine="openai"), rule("b", engine="ollama"))
    r = router(rule("a", engine="openai"), rule("b"))  # auto keeps what was declared
    assert r.rules[1].upstream.kind == "openai"
    assert router(engine="ollama").default.kind == "ollama"


def test_upstreams_carry_the_timeouts():
    r = router(rule("a"), connect_timeout=1.5, read_timeout=7, total_timeout=9)
    for upstream in (r.default, r.rules[0].upstream):
        assert (upstream.timeout.connect, upstream.timeout.sock_read) == (1.5, 7)
        assert upstream.timeout.total == 9


def test_describe_lists_the_rules_in_the_order_they_are_tried():
    r = router(
        rule("low", "http://10.0.0.9:80", match={"path": "x"}),
        rule("high", priority=3, engine="openai"),
    )
    described = r.describe()
    assert [x["name"] for x in described["rules"]] == ["high", "low"]
    assert described["rules"][0]["engine_detected"] == "openai"
    assert described["rules"][1]["match"]["path"] == "x"
    assert described["rules"][1]["engine_detected"] is None
    assert described["default"] == {"target": DEFAULT, "engine": "auto", "engine_detected": None}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([rule("r"), rule("r")], "rule #2 ('r'): name: duplicate rule name"),
        ([rule("r", match={"path": "("})], "rule #1 ('r'): match.path: Value error, invalid"),
        ([rule("r", match={"domain": "["})], "match.domain: Value error, invalid regex"),
        ([rule("r", match={"headers": {"x": "("}})], "match.headers: Value error, invalid"),
        ([rule("r", match={"query": {"x": "("}})], "match.query: Value error, invalid"),
        ([rule("r", match={"body": {"x": "("}})], "match.body: Value error, invalid"),
        ([rule("r", match={"colour": "red"})], "match.colour: Extra inputs"),
        ([{"target": "http://x"}], "rule #1: name: Field required"),
        ([{}], "rule #1: name: Field required"),  # the first of two errors
        ([rule("ok"), "text"], "rule #2: rule: Input should be"),
    ],
)
def test_a_bad_rule_is_one_error_naming_it(rules, message):
    with pytest.raises(ConfigError) as caught:
        router(*rules)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n", "not YAML: while parsing a flow node"),  # its first line
        ("rules: 3\nother: 1\n", "rules: Input should be a valid list"),  # the first error
        (  # names read from YAML are equal strings, not the same object
            "rules:\n  - {name: same-name, target: 'http://a'}\n"
            "  - {name: same-name, target: 'http://b'}\n",
            "rule #2 ('same-name'): name: duplicate rule name",
        ),
        ("other: []\n", "other: Extra inputs are not permitted"),
        ("rules:\n  - name: r\n    target: nowhere\n", "rule #1 ('r'): target: "),
    ],
)
def test_a_bad_routes_file_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Router.from_settings(load_settings(target_url=DEFAULT, routes_file=path))
    error = str(caught.value)
    assert error.startswith(f"{path}: ") and message in error and "\n" not in error


def test_routes_file_missing_empty_or_absent(tmp_path):
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError, match=f"UV_CUBE_AGENT_ROUTES_FILE={missing}: No such file"):
        Router.from_settings(load_settings(target_url=DEFAULT, routes_file=missing))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert Router.from_settings(load_settings(target_url=DEFAULT, routes_file=empty)).rules == []
    assert Router.from_settings(load_settings(target_url=DEFAULT)).rules == []
    listed = tmp_path / "one.yaml"
    listed.write_text("rules:\n  - name: r\n    target: http://10.0.0.1:8000\n")
    loaded = Router.from_settings(load_settings(target_url=DEFAULT, routes_file=listed))
    assert [x.name for x in loaded.rules] == ["r"]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("/", "strip_prefix is whole path segments"),
        ("/a%2Fb", "strip_prefix '/a%2Fb' is not a canonical path"),
        ("/a/../b", "strip_prefix '/a/../b' is not a canonical path"),
        ("/a/", "strip_prefix '/a/' is not a canonical path"),
        ("a", "strip_prefix 'a' is not a canonical path"),
        ("/caf\u00e9", "strip_prefix '/caf\u00e9' is not a canonical path"),
        ("/a%21b", "strip_prefix is whole path segments (/a/b), without escapes"),  # canonical
    ],
)
def test_strip_prefix_is_whole_segments_without_escapes(prefix, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        router(rule("r", strip_prefix=prefix))


def test_a_strip_prefix_that_is_whole_segments_is_taken():
    for prefix in ("/a", "/a/b", "/a:b@c"):
        r = router(rule("r", strip_prefix=prefix))
        assert r.rules[0].strip_prefix == prefix
        assert route(r, prefix + "/v1/models")[1] == "/v1/models"
    assert router(rule("r", strip_prefix="")).rules[0].strip_prefix == ""


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://10.0.0.1:8000/?a=1", "an engine URL has no query or fragment"),
        ("http://10.0.0.1:8000/base#top", "an engine URL has no query or fragment"),
        ("http://10.0.0.1:8000/base?", "an engine URL has no query or fragment"),
        ("http://10.0.0.1:8000/#", "an engine URL has no query or fragment"),
        ("http://10.0.0.1:8000/a/../b", "the engine URL's path '/a/../b' is not a canonical"),
        ("http://10.0.0.1:8000/a/./b", "the engine URL's path '/a/./b' is not a canonical"),
        ("http://10.0.0.1:8000//a", "the engine URL's path '//a' is not a canonical"),
        ("http://10.0.0.1:8000/a%2Fb", "the engine URL's path '/a%2Fb' is not a canonical"),
        ("http://10.0.0.1:8000/caf\u00e9", "the engine URL's path '/caf\u00e9' is not a canonical"),
    ],
)
def test_an_engine_url_is_a_base_path_without_query_or_fragment(target, message):
    """Its path is prefixed to every forwarded path: canonical as written, before URL
    parsing resolves any "..", so a rule cannot reach another path than it says."""
    with pytest.raises(ConfigError) as caught:
        router(rule("r", target=target))
    assert "rule #1 ('r'): target: Value error, " + message in str(caught.value)


def test_engine_urls_that_are_taken():
    for target, url in (
        ("http://10.0.0.1:8000", "http://10.0.0.1:8000"),
        ("http://10.0.0.1:8000/", "http://10.0.0.1:8000"),
        ("http://10.0.0.1:8000/base/", "http://10.0.0.1:8000/base"),
        ("http://10.0.0.1:8000/a/b-c", "http://10.0.0.1:8000/a/b-c"),
    ):
        assert route(router(rule("r", target=target)))[0] == url


def test_a_value_longer_than_the_match_bound_is_refused_not_searched():
    """agent/README.md: values longer than 4096 characters refuse the request."""
    r = router(rule("r", match={"headers": {"x-v": "a$"}}))
    assert route(r, headers={"x-v": "a" * 4096})[2] == "r"  # at the bound
    with pytest.raises(AgentError) as caught:
        route(r, headers={"x-v": "a" * 4097})
    assert (caught.value.status, caught.value.code) == (400, "unroutable")
    assert "header x-v" in caught.value.message
    assert "longer than 4096 characters" in caught.value.message


def test_a_backtracking_match_gives_up_within_its_timeout():
    r = router(rule("r", match={"headers": {"x-v": "^(a|aa)+$"}}))
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        route(r, headers={"x-v": "a" * 40 + "b"})  # 2^40 steps without the timeout
    assert time.monotonic() - started < scaled(0.8)  # MATCH_TIMEOUT is 0.05 s
    assert (caught.value.status, caught.value.code) == (400, "unroutable")
    assert "took too long" in caught.value.message


def test_patterns_without_repetition_skip_the_timeout():
    """routing.py: a pattern without repetition or back-reference runs on `re` (no timeout
    needed, and no `regex` import for an agent without other rules); any other on `regex`,
    wherever the repetition is nested (groups, branches, look-arounds, sets)."""
    linear = ("^/api/", "^bench$", "^(team-a|team-b)$", "^tiny", "[a-c]x", "(?=ab)c", "(?:x|(y))")
    for pattern in linear:
        assert isinstance(_regex(pattern), _Linear), pattern
    backtracking = ("^/v1/.*$", "(x|xx)+y", "a{2,3}", r"(a)\1", "(?=a*)b", "^(a+)$",
                    "^(x|(y+))$", "(?:a|b(c|d*))", "(?<!a+?)b", "(a)?(?(1)b|c)", "a*+")  # fmt: skip
    for pattern in backtracking:
        assert not isinstance(_regex(pattern), _Linear), pattern
    # what the walk does not understand counts as repetition
    assert _repeats(5) is True and _repeats([("x",)]) is True


def test_an_agent_without_backtracking_rules_never_imports_regex():
    """Importing `regex` costs ~3 MB of idle RSS (the agent's memory target counts it)."""
    code = (
        "import sys\n"
        "from cube_agent.config import load_settings\n"
        "from cube_agent.routing import Router\n"
        "rules = [{'name': 'r', 'target': 'http://10.0.0.1:1', 'match': {'path': '^/v1/'}}]\n"
        "Router(load_settings(target_url='http://10.0.0.2:1', auth=False), rules)\n"
        "print('regex' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr

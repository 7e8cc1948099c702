"""The canonical path (cube_agent.paths): a path is accepted only when the agent, the
client library that forwards it and the engine all read the same segments from it.

Properties over arbitrary bytes (hypothesis), then the spellings the attack used."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from cube_agent.config import Settings
from cube_agent.paths import PathError, canonical_path, check_query, drop_segments
from cube_agent.routing import Router
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

# Bytes an attacker would try, weighted towards the interesting ones.
PIECES = st.sampled_from(
    [b"/", b".", b"..", b"%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"\\", b"%3f", b"%23", b"?",
     b"#", b"%00", b"\x00", b"\t", b" ", b"%25", b"%252e", b";", b"%3b", b"%3A", b":", b"@",
     b"%", b"%zz", b"v1", b"api", b"pull", b"a", b"~", b"\xc3\xa9", b"%c3%a9", b"%40", b"//"]
)  # fmt: skip
RAW = st.lists(PIECES, max_size=12).map(b"".join) | st.binary(max_size=40)


def accepted(raw: bytes) -> str | None:
    try:
        return canonical_path(raw)
    except PathError:
        return None


@settings(max_examples=3000, deadline=None)
@given(RAW)
@example(b"/v1/%2e%2e/api/delete")
@example(b"/v1/..%2Fapi/create")
def test_an_accepted_path_has_one_meaning(raw):
    path = accepted(raw)
    if path is None:
        return
    text = raw.decode("ascii")  # accepted paths are ASCII
    # the engine decodes once and sees what the agent decided on; decoding again changes
    # nothing (no double decoding), and the segments are the raw ones (no escaped "/")
    assert unquote(text) == path
    assert unquote(path) == path
    assert text.count("/") == path.count("/")
    # nothing to normalise: no dot segments, no empty segments, no separators hidden
    assert path == "/" or posixpath.normpath(path) == path
    assert not any(c in path for c in "\\?#%;") and path.isprintable() and " " not in path
    # what the upstream client sends is the raw path, byte for byte
    assert URL("http://engine" + text, encoded=True).raw_path == text


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/%2e%2e/api/delete",
        b"/v1/../api/pull",
        b"/v1/..%2Fapi/create",
        b"/v1/%2e%2e/metrics",
        b"/v1/%2e%2e/api/blobs/sha256:00",
        b"/team-a/v1/../../b/v1/chat/completions",
        b"/v1/chat/completions%3F",
        b"/v1/chat/completions%23x",
        b"/v1/%2e/chat/completions",
        b"/v1/x/../chat/completions",
        b"/v1/./chat/completions",
        b"/v1//chat/completions",
        b"/v1/chat/completions/",
        b"//v1/models",
        b"/v1\\..\\api/pull",
        b"/v1/%5c../api/pull",
        b"/v1/models%00",
        b"/v1/models\x00",
        b"/v1/mod\tels",
        b"/v1/%252e%252e/api/pull",
        b"/v1/%61pi",  # an escaped unreserved letter: normalisation would change it
        b"/v1/models;x",
        b"/v1/models/%c3%a9",
        b"/v1/models/\xc3\xa9",
        b"v1/models",
        b"",
    ],
)
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(PathError):
        canonical_path(raw)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/", "/"),
        (b"/v1/chat/completions", "/v1/chat/completions"),
        (b"/team-a/api/chat", "/team-a/api/chat"),
        (b"/v1/models/llama3.2:3b", "/v1/models/llama3.2:3b"),
        (b"/v1/models/llama3.2%3A3b", "/v1/models/llama3.2:3b"),
        (b"/v1/models/Qwen/Qwen2.5-0.5B-Instruct", "/v1/models/Qwen/Qwen2.5-0.5B-Instruct"),
        (b"/v1/files/a..b", "/v1/files/a..b"),
    ],
)
def test_canonical_paths_pass(raw, path):
    assert canonical_path(raw) == path


def test_queries_are_forwarded_only_when_unambiguous():
    assert check_query(b"variant=b&x=%20y") == "variant=b&x=%20y"
    for bad in (b"a=1#frag", b"a=1;b=2", b"a= 1", b"a=%zz", b"a=\x00", b"a=\xff"):
        with pytest.raises(PathError):
            check_query(bad)


def test_dropping_segments_keeps_the_rest_raw():
    assert drop_segments("/team-a/v1/models/x%3Ay", 1) == "/v1/models/x%3Ay"
    assert drop_segments("/v1", 1) == "/"
    assert drop_segments("/a/b", 0) == "/a/b"


def test_a_strip_prefix_strips_whole_segments_only(tmp_path):
    rules = [
        {"name": "r", "target": "http://engine:1/engines/a", "strip_prefix": "/v1"},
    ]
    router = Router(Settings(), rules)
    up, path, _ = router.route("GET", "/v1/models", "default", {}, {}, lambda: None)
    assert (up.base_path, path) == ("/engines/a", "/models")
    # /v1x/... is not under /v1: forwarded whole, not as "x/..." glued to the base path
    up, path, _ = router.route("GET", "/v1x/models", "default", {}, {}, lambda: None)
    assert path == "/v1x/models"


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "r", "target": "http://engine:1/a/../b"},
        {"name": "r", "target": "http://engine:1/a/%2e%2e"},
        {"name": "r", "target": "http://engine:1/a?x=1"},
        {"name": "r", "target": "http://engine:1/", "strip_prefix": "/v1/"},
        {"name": "r", "target": "http://engine:1/", "strip_prefix": "/v1/.."},
        {"name": "r", "target": "http://engine:1/", "strip_prefix": "v1"},
    ],
)
def test_rule_base_paths_and_prefixes_must_be_canonical(rule):
    from cube_agent.config import ConfigError

    with pytest.raises(ConfigError):
        Router(Settings(), [rule])


def test_rule_regexes_are_bounded_on_client_input():
    """Routing-rule regexes ran backtracking `re` on unbounded client input, on the event
    loop: one request with a header of 5000 x froze the agent. Now each condition has a
    timeout and an input bound, and either refuses the request (400)."""
    import time

    from cube_agent.errors import AgentError

    rules = [
        {"name": "slow", "match": {"headers": {"x-team": "(x+x+)+y"}}, "target": "http://e:1"},
    ]
    router = Router(Settings(), rules)
    started = time.monotonic()
    with pytest.raises(AgentError) as err:
        router.route("GET", "/v1/models", "default", {"x-team": "x" * 4000}, {}, lambda: None)
    assert err.value.status == 400 and "took too long" in err.value.message
    assert time.monotonic() - started < 1
    with pytest.raises(AgentError) as err:
        router.route("GET", "/v1/models", "default", {"x-team": "x" * 5000}, {}, lambda: None)
    assert err.value.status == 400 and "longer than" in err.value.message
    # ordinary input still routes as the rule says
    _, _, name = router.route("GET", "/v1/models", "default", {"x-team": "xxy"}, {}, lambda: None)
    assert name == "slow"
    _, _, name = router.route("GET", "/v1/models", "default", {"x-team": "no"}, {}, lambda: None)
    assert name is None


@pytest.mark.parametrize("pattern", ["(x|xx)+y", "(x+x+)+y", "^(x+)+$", "(.*a){12}"])
def test_every_backtracking_shape_is_cut_off(pattern):
    """The timeout holds for the shapes regex's own safeguards miss ((x|xx)+y ran 9 s
    with a 2 s timeout: checked coarsely, so the bound asserted is generous)."""
    import time

    from cube_agent.errors import AgentError

    rules = [{"name": "r", "match": {"body": {"model": pattern}}, "target": "http://e:1"}]
    router = Router(Settings(), rules)
    for value in ("x" * 30, "x" * 4000):
        started = time.monotonic()
        try:
            body = {"model": value}
            router.route("POST", "/v1/chat/completions", "default", {}, {}, lambda b=body: b)
        except AgentError as exc:
            assert exc.status == 400
        assert time.monotonic() - started < 1.5

"""The key check itself, in process: who gets 401, who gets 403, and how keys are compared.

The agent-level tests (test_agent_errors.py, test_agent_keys.py) show the same answers over
HTTP; these are fast enough to run for every mutant in `make mutation`.
"""

from __future__ import annotations

import hmac
import os

import pytest
from cube_agent import keys as keys_module
from cube_agent.auth import Auth
from cube_agent.errors import AgentError
from cube_agent.keys import Key, KeyFile, hash_key
from starlette.datastructures import Headers


@pytest.fixture
def key_file(tmp_path):
    kf = KeyFile(tmp_path / "keys.json")
    plain = {
        "admin": kf.add("admin", ["team-b"], admin=True),
        "app": kf.add("app", ["default"]),
        "team-a": kf.add("team-a", ["team-a", "team-c"]),
        "every": kf.add("every", ["*"]),
    }
    kf.save()
    return KeyFile.load(kf.path), plain


def bearer(value: str) -> Headers:
    return Headers({"authorization": value})


def refused(auth: Auth, headers: Headers, domain: str | None, admin: bool = False) -> AgentError:
    with pytest.raises(AgentError) as caught:
        auth.check(headers, domain, admin)
    return caught.value


def test_every_stored_hash_goes_through_compare_digest(key_file, monkeypatch):
    """Constant time: each lookup compares the presented key's hash with every stored hash
    through hmac.compare_digest, whether it matches the first, the last or none (`==` or an
    early return would tell by its timing how far the lookup got)."""
    kf, plain = key_file
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    stored = [k.sha256 for k in kf.keys]
    for name in ("admin", "every", None):
        presented = plain[name] if name else "cube_not-a-key"
        compared.clear()
        found = kf.find(presented)
        assert (found.name if found else None) == name
        assert sorted(a for a, _ in compared) == sorted(stored)
        assert {b for _, b in compared} == {hash_key(presented)}


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic abc", "Token x", "bearerabc"],
)
def test_no_bearer_key_is_401_missing_key(key_file, header):
    kf, _ = key_file
    headers = Headers({} if header is None else {"authorization": header})
    error = refused(Auth(kf), headers, None)
    assert (error.status, error.code) == (401, "missing_key")
    assert "Authorization: Bearer" in error.message


def test_an_unknown_key_is_401_invalid_key(key_file):
    kf, plain = key_file
    for presented in ("cube_nope", plain["app"] + "x", plain["app"][:-1], plain["app"].upper()):
        error = refused(Auth(kf), bearer(f"Bearer {presented}"), None)
        assert (error.status, error.code, error.message) == (401, "invalid_key", "invalid API key")


def test_the_scheme_is_case_blind_and_spaces_around_the_key_do_not_count(key_file):
    kf, plain = key_file
    for header in (f"Bearer {plain['app']}", f"bearer {plain['app']}", f"BEARER  {plain['app']} "):
        assert Auth(kf).check(bearer(header), "default").name == "app"


def test_domains_are_granted_per_key(key_file):
    kf, plain = key_file
    auth = Auth(kf)

    def check(name: str, domain: str | None) -> int:
        try:
            auth.check(bearer(f"Bearer {plain[name]}"), domain)
        except AgentError as e:
            assert e.code == "domain_forbidden" and repr(name) in e.message, e.message
            assert repr(domain) in e.message
            return e.status
        return 200

    assert check("app", "default") == 200
    assert check("app", "team-a") == 403
    assert check("team-a", "team-a") == 200
    assert check("team-a", "team-c") == 200
    assert check("team-a", "default") == 403
    assert check("every", "anything") == 200
    assert check("admin", "anything") == 200  # an admin key may use every domain
    for name in plain:  # no domain asked: any valid key will do
        assert check(name, None) == 200


def test_admin_endpoints_need_an_admin_key(key_file):
    kf, plain = key_file
    auth = Auth(kf)
    assert auth.check(bearer(f"Bearer {plain['admin']}"), None, admin=True).name == "admin"
    for name in ("app", "every"):
        error = refused(auth, bearer(f"Bearer {plain[name]}"), None, admin=True)
        assert (error.status, error.code) == (403, "admin_required")
        assert repr(name) in error.message


def test_auth_off_lets_everything_through():
    assert Auth(None).check(Headers({}), "team-a", admin=True) is None


def test_a_key_is_found_in_a_file_changed_after_start(key_file):
    """The check reloads the key file: a key added by `cube-agent keys add` works at once."""
    kf, _ = key_file
    writer = KeyFile.load(kf.path)
    late = writer.add("late", ["default"])
    writer.save()
    kf._checked = 0.0  # the stat throttle (once a second) has expired
    os.utime(kf.path, (1, 1))  # a new mtime even within the filesystem's timestamp grain
    assert Auth(kf).check(bearer(f"Bearer {late}"), "default").name == "late"


def test_key_allows():
    assert Key("k", "h", ("a", "b")).allows("b")
    assert not Key("k", "h", ("a",)).allows("b")
    assert not Key("k", "h", ()).allows("a")
    assert Key("k", "h", ("*",)).allows("b")
    assert Key("k", "h", (), admin=True).allows("b")

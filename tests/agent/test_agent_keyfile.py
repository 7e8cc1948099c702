"""The key file in process: its strict format, fail-closed reloads, edits and modes.

test_agent_keys.py drives the same through `cube-agent keys` and a running agent; these are
fast enough to run for every mutant in `make mutation`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import stat
import threading

import pytest
from cube_agent import keys
from cube_agent.keys import (
    KeyFile,
    KeyFileError,
    KeyFileUnparsable,
    check_domain,
    hash_key,
    init_key_file,
    locked,
    make_dirs,
    new_key,
    parse_keys,
)

HASH = "a" * 64


def entry(**fields) -> dict:
    return {"name": "k", "sha256": HASH, "domains": ["default"], **fields}


def text(*entries: dict, **top) -> str:
    return json.dumps({"keys": list(entries), **top})


def refusal(content: str, kind: type[Exception] = KeyFileError) -> str:
    with pytest.raises(kind) as caught:
        parse_keys(content, keys.Path("/k.json"))
    assert type(caught.value) is kind
    message = str(caught.value)
    assert message.startswith("/k.json: ") and "\n" not in message
    return message


def test_a_good_file_parses_to_keys():
    [key] = parse_keys(text(entry(admin=True, created="2026-01-01T00:00:00Z")), keys.Path("/k"))
    assert key == keys.Key("k", HASH, ("default",), True, "2026-01-01T00:00:00Z")
    [plain] = parse_keys(text(entry()), keys.Path("/k"))
    assert (plain.admin, plain.created) == (False, "")
    assert parse_keys(text(), keys.Path("/k")) == []


@pytest.mark.parametrize("content", ["", "  \n", "{", "[1,", "not json"])
def test_empty_or_not_json_is_unparsable(content):
    message = refusal(content, KeyFileUnparsable)
    assert "empty" in message or "not JSON" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (json.dumps({"keys": "x"}), "keys: Input should be a valid list"),
        (json.dumps({"keys": [], "extra": 1}), "extra: Extra inputs are not permitted"),
        (json.dumps([]), "file: Input should be"),
        (text(entry(admin="false")), "keys[0] ('k'): admin: Input should be a valid boolean"),
        (text(entry(domains="team-b")), "keys[0] ('k'): domains: Input should be a valid list"),
        (text(entry(sha256="A" * 64)), "keys[0] ('k'): sha256: String should match pattern"),
        (text(entry(sha256="a" * 63)), "keys[0] ('k'): sha256: String should match"),
        (text(entry(name="")), "keys[0] ('')"),
        (text(entry(name="n" * 201)), "name: String should have at most 200"),
        (text(entry(name=3)), "keys[0]: name: Input should be a valid string"),
        (text(entry(colour="red")), "keys[0] ('k'): colour: Extra inputs"),
        (text(entry(domains=["v1"])), "keys[0] ('k'): domains: invalid domain 'v1'"),
        (text(entry(), entry()), "keys[1] ('k'): name: duplicate key name"),
        (text(entry(), {"name": "b"}), "keys[1] ('b'): sha256: Field required"),  # the first
    ],
)
def test_a_bad_entry_is_refused_naming_it(content, expected):
    assert expected in refusal(content)


def test_names_are_compared_by_value():
    # json.loads makes distinct string objects: "is" would miss the duplicate
    one = json.dumps(entry(name="a-b"))
    duplicate = f'{{"keys": [{one}, {one}]}}'
    assert "duplicate key name" in refusal(duplicate)


@pytest.mark.parametrize("domain", ["*", "default", "team-a", "a.b_c-d", "A" * 63, "9x"])
def test_domains_that_may_be_granted(domain):
    check_domain(domain)


@pytest.mark.parametrize(
    "domain", ["", "-a", ".a", "_a", "a/b", "a b", "A" * 64, "**", *sorted(keys.RESERVED_DOMAINS)]
)
def test_domains_that_may_not(domain):
    with pytest.raises(KeyFileError, match="invalid domain"):
        check_domain(domain)


def test_new_keys_are_long_random_and_stored_as_their_sha256():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("cube_") and len(a) == 5 + 43  # 32 bytes, base64url
    assert hash_key("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_keys_are_immutable_values():
    key = keys.Key("k", HASH, ("default",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.admin = True  # type: ignore[misc]
    assert {key, keys.Key("k", HASH, ("default",))} == {key}


def test_removing_an_unknown_name_from_many_keys_is_an_error(tmp_path):
    kf = KeyFile(tmp_path / "keys.json")
    kf.keys = [keys.Key(f"k{i}", HASH, ("default",)) for i in range(300)]
    with pytest.raises(KeyFileError, match="no key named 'other'"):
        kf.remove("other")
    kf.remove("k299")
    assert len(kf.keys) == 299


def test_add_remove_save_and_load_round_trip(tmp_path):
    kf = KeyFile(tmp_path / "sub/keys.json")
    plaintext = kf.add("app", ["default", "team-a"])
    admin = kf.add("root", ["*"], admin=True)
    with pytest.raises(KeyFileError, match="'app' already exists"):
        kf.add("app", ["default"])
    with pytest.raises(KeyFileError, match="invalid domain"):
        kf.add("bad", ["api"])
    assert [k.name for k in kf.keys] == ["app", "root"]
    kf.save()
    loaded = KeyFile.load(kf.path)
    assert loaded.keys == kf.keys
    assert loaded.find(plaintext).name == "app" and loaded.find(admin).admin
    assert plaintext not in kf.path.read_text()  # only the hash is stored
    created = loaded.keys[0].created
    assert len(created) == 20 and created.endswith("Z") and created[10] == "T"
    loaded.remove("app")
    with pytest.raises(KeyFileError, match="no key named 'app'"):
        loaded.remove("app")
    loaded.save()
    assert [k.name for k in KeyFile.load(kf.path).keys] == ["root"]
    loaded.add("alpha", ["default"])
    loaded.remove("root")  # only that one, whatever the order of the names
    assert [k.name for k in loaded.keys] == ["alpha"]
    assert [p.name for p in kf.path.parent.iterdir()] == ["keys.json"]  # no temp file left


def test_save_keeps_the_files_mode_and_makes_new_ones_0640(tmp_path):
    kf = KeyFile(tmp_path / "keys.json")
    kf.add("a", ["default"])
    kf.save()
    assert stat.S_IMODE(kf.path.stat().st_mode) == 0o640
    kf.path.chmod(0o600)
    kf.save()
    assert stat.S_IMODE(kf.path.stat().st_mode) == 0o600
    other = KeyFile(tmp_path / "other.json")
    other.save(mode=0o644)
    assert stat.S_IMODE(other.path.stat().st_mode) == 0o644


def test_load_of_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(KeyFileUnparsable, match="cube-agent keys init"):
        KeyFile.load(tmp_path / "none.json")


def test_an_unreadable_file_is_unparsable(tmp_path):
    (tmp_path / "dir.json").mkdir()  # stat works, reading fails (root reads anything else)
    with pytest.raises(KeyFileUnparsable, match="Is a directory"):
        KeyFile.load(tmp_path / "dir.json")
    (tmp_path / "latin.json").write_bytes(b'{"keys": [], "x": "\xff"}')
    with pytest.raises(KeyFileUnparsable, match="codec can't decode"):
        KeyFile.load(tmp_path / "latin.json")


@pytest.fixture
def served(tmp_path):
    """A key file as the agent holds it, and an editor of the same file."""
    kf = KeyFile(tmp_path / "keys.json")
    first = kf.add("first", ["default"])
    kf.save()
    return KeyFile.load(kf.path), first


def reload(kf: KeyFile) -> None:
    kf._checked = 0.0  # as if a second had passed
    kf.reload_if_changed()


def test_a_change_is_picked_up_and_an_unchanged_file_not_reread(served, monkeypatch):
    kf, first = served
    editor = KeyFile.load(kf.path)
    second = editor.add("second", ["default"])
    editor.save()
    reload(kf)
    assert kf.find(second).name == "second" and kf.find(first).name == "first"
    reads = []
    monkeypatch.setattr(kf, "_read", lambda: reads.append(1))
    reload(kf)
    assert reads == []


def test_the_file_is_statted_at_most_once_a_second(served):
    kf, first = served
    editor = KeyFile.load(kf.path)
    editor.remove("first")
    editor.save()
    kf._checked = keys.time.monotonic()  # checked just now
    kf.reload_if_changed()
    assert kf.find(first) is not None  # not yet
    kf.reload_if_changed(every=0.0)
    assert kf.find(first) is None


def test_by_default_a_change_is_seen_once_a_second_has_passed(served):
    kf, first = served
    editor = KeyFile.load(kf.path)
    editor.remove("first")
    editor.save()
    kf._checked = keys.time.monotonic() - 1.5
    kf.reload_if_changed()
    assert kf.find(first) is None


def test_a_removed_key_stops_working(served):
    kf, first = served
    editor = KeyFile.load(kf.path)
    editor.remove("first")
    editor.save()
    reload(kf)
    assert kf.find(first) is None and kf.keys == []


@pytest.mark.parametrize("broken", ["", "{", "gone"])
def test_an_unusable_file_leaves_no_valid_key_until_fixed(served, broken, caplog):
    kf, first = served
    good = kf.path.read_text()
    if broken == "gone":
        kf.path.unlink()
    else:
        kf.path.write_text(broken)
    with caplog.at_level(logging.ERROR, "cube_agent.keys"):
        reload(kf)
    assert kf.find(first) is None and kf.keys == []
    assert "no key is valid" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, "cube_agent.keys"):
        reload(kf)  # logged once per change
    assert caplog.text == ""
    kf.path.write_text(good)
    reload(kf)
    assert kf.find(first).name == "first"


def test_an_unusable_file_is_logged_once_per_change_even_with_no_keys_left(served, caplog):
    kf, _ = served
    kf.path.unlink()
    reload(kf)  # no key left
    with caplog.at_level(logging.ERROR, "cube_agent.keys"):
        kf.path.write_text("{")  # a new change, still unusable
        reload(kf)
    assert "no key is valid" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, "cube_agent.keys"):
        kf.path.unlink()  # gone while nothing was valid anyway: nothing new to say
        reload(kf)
    assert caplog.text == ""


def test_a_path_that_cannot_be_statted_leaves_no_valid_key(tmp_path):
    kf = KeyFile(tmp_path / "dir/keys.json")
    first = kf.add("first", ["default"])
    kf.save()
    served = KeyFile.load(kf.path)
    kf.path.unlink()
    kf.path.parent.rmdir()
    kf.path.parent.write_text("")  # stat() of dir/keys.json: not a directory
    reload(served)
    assert served.find(first) is None and served.keys == []


def test_a_bad_entry_keeps_the_last_good_keys(served, caplog):
    kf, first = served
    data = json.loads(kf.path.read_text())
    data["keys"].append({"name": "bad", "sha256": "nope", "domains": []})
    kf.path.write_text(json.dumps(data))
    with caplog.at_level(logging.ERROR, "cube_agent.keys"):
        reload(kf)
    assert kf.find(first).name == "first"
    assert "the last good keys stay" in caplog.text and "keys[1] ('bad')" in caplog.text


def test_a_same_size_rewrite_in_the_same_instant_is_seen_by_its_inode(served):
    kf, first = served
    editor = KeyFile.load(kf.path)
    editor.keys = [keys.Key("other", hash_key("x" * 48), ("default",))]
    before = kf.path.stat()
    editor.save()  # a new file (inode) through os.replace
    os.utime(kf.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    reload(kf)
    assert kf.find(first) is None and kf.find("x" * 48).name == "other"


def test_the_edit_lock_is_exclusive(tmp_path):
    path = tmp_path / "keys.json"
    held, release = threading.Event(), threading.Event()

    def holder():
        with locked(path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        fd = os.open(path.with_name("keys.json.lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release.set()
            thread.join(10)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder is done
        finally:
            os.close(fd)
    finally:
        release.set()
        thread.join(10)


def test_init_makes_one_admin_key_once(tmp_path):
    path = tmp_path / "etc/cube/keys.json"
    old = os.umask(0o027)  # the unit's UMask
    try:
        admin_file = init_key_file(path, None)
    finally:
        os.umask(old)
    assert admin_file == path.parent / "admin.key"
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    for directory in (path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    [key] = KeyFile.load(path).keys
    assert (key.name, key.domains, key.admin) == ("admin", ("*",), True)
    plaintext = admin_file.read_text()
    assert plaintext.endswith("\n") and KeyFile.load(path).find(plaintext.strip()) == key
    assert init_key_file(path, None) is None  # already there: untouched
    assert admin_file.read_text() == plaintext


def test_make_dirs_leaves_existing_directories_alone(tmp_path):
    (tmp_path / "a").mkdir(mode=0o700)
    make_dirs(tmp_path / "a/b/c")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a/b/c").stat().st_mode) == 0o755

"""The Ollama double's registry, models store and capabilities, checked against Ollama
0.12.3's server/images.go, manifest.go, create.go and routes.go."""

from __future__ import annotations

import hashlib
import json

import httpx
import ollama
import pytest
from support.engines import start_ollama_double

CATALOGUE = {
    "llama3.2:3b": ["completion", "tools"],
    "starcoder2:3b": ["completion", "insert"],
    "nomic-embed-text:v1.5": ["embedding"],
    "qwen3:0.6b": ["completion", "tools", "thinking"],
    "gpt-oss:20b": ["completion", "tools", "thinking"],
}


def client(engine) -> ollama.Client:
    return ollama.Client(host=engine.url, timeout=10)


def post(engine, path, body) -> httpx.Response:
    return httpx.post(engine.url + path, json=body, timeout=10)


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def manifest_file(engine, name: str):
    model, tag = name.split(":")
    return engine.models_dir / "manifests/registry.ollama.ai/library" / model / tag


# -- the registry


def test_pull_streams_progress_for_every_layer_then_the_config(ollama_double):
    steps = [s for s in ndjson(post(ollama_double, "/api/pull", {"model": "starcoder2:3b"}))]
    statuses = [s["status"] for s in steps]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    manifest = json.loads(manifest_file(ollama_double, "starcoder2:3b").read_bytes())
    digests = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    layered = [s for s in steps if "digest" in s]
    assert list(dict.fromkeys(s["digest"] for s in layered)) == digests
    assert all(s["status"] == "pulling " + s["digest"][7:19] for s in layered)
    first = layered[0]
    assert "completed" not in first  # ProgressResponse.Completed is omitempty
    assert {s["digest"] for s in layered if s.get("completed") == s["total"]} == set(digests)
    # a second pull finds every blob: one finished step each, nothing downloaded
    again = ndjson(post(ollama_double, "/api/pull", {"model": "starcoder2:3b"}))
    assert [s.get("completed") == s.get("total") for s in again if "digest" in s] == [True] * len(
        digests
    )


def test_pull_of_a_name_the_registry_lacks_fails_as_ollama_does(ollama_double):
    streamed = post(ollama_double, "/api/pull", {"model": "lama3.2:3b"})
    assert streamed.status_code == 200
    assert ndjson(streamed) == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    once = post(ollama_double, "/api/pull", {"model": "qwen2.5", "stream": False})
    assert (once.status_code, once.json()) == (
        500,
        {"error": "pull model manifest: file does not exist"},
    )
    with pytest.raises(ollama.ResponseError) as e:
        client(ollama_double).pull("llama3.2:70b")
    assert e.value.error == "pull model manifest: file does not exist"
    bad = post(ollama_double, "/api/pull", {"model": "not a model!"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid model name"})
    assert {m.model for m in client(ollama_double).list().models} == {
        "llama3.2:3b",
        "nomic-embed-text:v1.5",
    }


def test_catalogue_models_and_their_capabilities(ollama_double):
    c = client(ollama_double)
    for name, capabilities in CATALOGUE.items():
        assert c.pull(name).status == "success"
        shown = c.show(name)
        assert shown.capabilities == capabilities, name
        arch = shown.modelinfo["general.architecture"]
        assert shown.modelinfo[f"{arch}.context_length"] > 0
        assert "general.name" not in shown.modelinfo
    assert c.pull("llama3.2").status == "success"  # the registry's tag for llama3.2:3b
    listed = {m.model: m for m in c.list().models}
    assert listed["llama3.2:latest"].digest == listed["llama3.2:3b"].digest
    details = listed["llama3.2:3b"].details
    assert (details.family, details.parameter_size, details.quantization_level) == (
        "llama",
        "3.2B",
        "Q4_K_M",
    )


def test_capability_refusals_use_ollamas_texts(ollama_double):
    c = client(ollama_double)
    for name in ("starcoder2:3b", "qwen3:0.6b"):
        c.pull(name)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for path, body, message in (
        (
            "/api/chat",
            {
                "model": "starcoder2:3b",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [tool],
            },
            "registry.ollama.ai/library/starcoder2:3b does not support tools",
        ),
        (
            "/api/chat",
            {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}], "think": True},
            "registry.ollama.ai/library/llama3.2:3b does not support thinking",
        ),
        (
            "/api/generate",
            {"model": "llama3.2:3b", "prompt": "x", "suffix": "y"},
            "registry.ollama.ai/library/llama3.2:3b does not support insert",
        ),
        (
            "/api/chat",
            {"model": "nomic-embed-text:v1.5", "messages": [{"role": "user", "content": "x"}]},
            '"nomic-embed-text:v1.5" does not support chat',
        ),
        (
            "/api/generate",
            {"model": "nomic-embed-text:v1.5", "prompt": "x"},
            '"nomic-embed-text:v1.5" does not support generate',
        ),
        (
            "/api/chat",
            {
                "model": "qwen3:0.6b",
                "messages": [{"role": "user", "content": "x"}],
                "think": "high",
            },
            'think value "high" is not supported for this model',
        ),
    ):
        r = post(ollama_double, path, body)
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    both = post(
        ollama_double,
        "/api/chat",
        {
            "model": "starcoder2:3b",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [tool],
            "think": True,
        },
    )
    assert both.json()["error"] == (
        "registry.ollama.ai/library/starcoder2:3b does not support tools\nthinking"
    )
    fim = c.generate(model="starcoder2:3b", prompt="def f(", suffix="return 1")
    assert fim.response == "Echo: def f("


# -- the store on disk


def test_the_store_holds_manifests_and_blobs_named_by_their_sha256(ollama_double):
    manifest = json.loads(manifest_file(ollama_double, "llama3.2:3b").read_bytes())
    assert manifest["schemaVersion"] == 2
    blobs = ollama_double.models_dir / "blobs"
    for layer in [*manifest["layers"], manifest["config"]]:
        data = (blobs / layer["digest"].replace(":", "-")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
        assert len(data) == layer["size"]
    kinds = [layer["mediaType"] for layer in manifest["layers"]]
    assert kinds[0] == "application/vnd.ollama.image.model"
    assert "application/vnd.ollama.image.template" in kinds
    model_blob = blobs / manifest["layers"][0]["digest"].replace(":", "-")
    assert model_blob.read_bytes()[:4] == b"GGUF"
    config = json.loads((blobs / manifest["config"]["digest"].replace(":", "-")).read_bytes())
    assert (config["model_format"], config["model_family"]) == ("gguf", "llama")
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    listed = {m.model: m for m in client(ollama_double).list().models}["llama3.2:3b"]
    raw = manifest_file(ollama_double, "llama3.2:3b").read_bytes()
    assert listed.digest == hashlib.sha256(raw).hexdigest()
    assert listed.size == sum(layer["size"] for layer in [*manifest["layers"], manifest["config"]])


def test_a_manifest_whose_blobs_are_missing_is_skipped_or_404(ollama_double):
    manifest = json.loads(manifest_file(ollama_double, "llama3.2:3b").read_bytes())
    blobs = ollama_double.models_dir / "blobs"
    (blobs / manifest["config"]["digest"].replace(":", "-")).unlink()
    c = client(ollama_double)
    assert {m.model for m in c.list().models} == {"nomic-embed-text:v1.5"}
    for path, body in (
        ("/api/chat", {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"model": "llama3.2:3b", "prompt": "x"}),
        ("/api/show", {"model": "llama3.2:3b"}),
    ):
        r = post(ollama_double, path, body)
        assert (r.status_code, r.json()) == (404, {"error": "model 'llama3.2:3b' not found"}), path


def test_a_missing_model_file_leaves_no_completion_capability(ollama_double):
    manifest = json.loads(manifest_file(ollama_double, "llama3.2:3b").read_bytes())
    blobs = ollama_double.models_dir / "blobs"
    (blobs / manifest["layers"][0]["digest"].replace(":", "-")).unlink()
    r = post(
        ollama_double,
        "/api/chat",
        {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x"}]},
    )
    assert (r.status_code, r.json()) == (400, {"error": '"llama3.2:3b" does not support chat'})
    shown = post(ollama_double, "/api/show", {"model": "llama3.2:3b"})
    assert shown.status_code == 500 and "no such file or directory" in shown.json()["error"]


def test_a_seeded_models_directory_is_listed_and_unused_blobs_pruned(tmp_path):
    seed = start_ollama_double(tmp_path, pull=("llama3.2:3b", "nomic-embed-text:v1.5"))
    seed.stop()
    stray = tmp_path / "blobs" / ("sha256-" + "0" * 64)
    stray.write_bytes(b"left over")
    partial = tmp_path / "blobs" / "sha256-abc-partial"
    partial.write_bytes(b"half a download")
    (tmp_path / "manifests/registry.ollama.ai/library/nomic-embed-text/v1.5").unlink()
    kept = start_ollama_double(tmp_path, env={"OLLAMA_NOPRUNE": "1"})
    kept.stop()
    assert stray.exists() and partial.exists()
    again = start_ollama_double(tmp_path)
    try:
        assert [m.model for m in client(again).list().models] == ["llama3.2:3b"]
        assert not stray.exists() and not partial.exists()
        manifest = json.loads(manifest_file(again, "llama3.2:3b").read_bytes())
        left = {p.name for p in (tmp_path / "blobs").iterdir()}
        assert left == {
            layer["digest"].replace(":", "-") for layer in [*manifest["layers"], manifest["config"]]
        }
    finally:
        again.stop()


def test_delete_removes_only_blobs_no_other_model_uses(ollama_double):
    c = client(ollama_double)
    c.copy("llama3.2:3b", "mine")
    assert manifest_file(ollama_double, "mine:latest").read_bytes() == (
        manifest_file(ollama_double, "llama3.2:3b").read_bytes()
    )
    blobs = ollama_double.models_dir / "blobs"
    before = {p.name for p in blobs.iterdir()}
    c.delete("llama3.2:3b")
    assert {p.name for p in blobs.iterdir()} == before  # "mine" still uses them
    assert c.chat(model="mine", messages=[{"role": "user", "content": "x"}]).message.content
    c.delete("mine")
    assert len(list(blobs.iterdir())) < len(before)
    assert not (ollama_double.models_dir / "manifests/registry.ollama.ai/library/mine").exists()
    for body, status, message in (
        ({"model": "mine"}, 404, "model 'mine' not found"),
        ({"model": "bad name!"}, 400, 'name "bad name!" is invalid'),
    ):
        r = httpx.request("DELETE", ollama_double.url + "/api/delete", json=body)
        assert (r.status_code, r.json()) == (status, {"error": message})


def test_copy_errors(ollama_double):
    for body, status, message in (
        ({"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
        ({"source": "bad name!", "destination": "x"}, 400, 'source "bad name!" is invalid'),
        ({"source": "llama3.2:3b", "destination": ""}, 400, 'destination "" is invalid'),
    ):
        r = post(ollama_double, "/api/copy", body)
        assert (r.status_code, r.json()) == (status, {"error": message})
    ok = post(ollama_double, "/api/copy", {"source": "llama3.2:3b", "destination": "team/m:v1"})
    assert (ok.status_code, ok.content) == (200, b"")
    assert "team/m:v1" in {m.model for m in client(ollama_double).list().models}


def test_names_are_matched_case_insensitively_except_by_chat(ollama_double):
    c = client(ollama_double)
    assert c.generate(model="LLAMA3.2:3B", prompt="x").response == "Echo: x"
    assert c.show("Llama3.2:3b").details.family == "llama"
    r = post(ollama_double, "/api/chat", {"model": "LLAMA3.2:3B", "messages": []})
    assert (r.status_code, r.json()) == (404, {"error": "model 'LLAMA3.2:3B' not found"})


# -- create and blobs


def test_create_from_a_model_with_a_system_prompt(ollama_double):
    c = client(ollama_double)
    steps = list(c.create("pirate", from_="llama3.2:3b", system="Talk like a pirate.", stream=True))
    statuses = [s.status for s in steps]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert any(s.startswith("creating new layer sha256:") for s in statuses)
    shown = post(ollama_double, "/api/show", {"model": "pirate"}).json()
    assert shown["system"] == "Talk like a pirate."
    assert shown["details"]["parent_model"] == "llama3.2:3b"
    assert shown["capabilities"] == ["completion", "tools"]
    assert "SYSTEM Talk like a pirate." in shown["modelfile"]
    assert c.chat(
        model="pirate", messages=[{"role": "user", "content": "ahoy"}]
    ).message.content == ("Echo: ahoy")
    templated = c.create("fim", from_="llama3.2:3b", template="{{ .Prompt }}{{ .Suffix }}")
    assert templated.status == "success"
    assert c.show("fim").capabilities == ["completion", "insert"]


def test_create_pulls_a_missing_source_and_refuses_bad_requests(ollama_double):
    c = client(ollama_double)
    steps = [s.status for s in c.create("coder", from_="starcoder2:3b", stream=True)]
    assert steps[0] == "pulling manifest" and steps[-1] == "success"
    assert "starcoder2:3b" in {m.model for m in c.list().models}
    for body, status, message in (
        ({"model": "x", "stream": False}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "bad name!", "from": "llama3.2:3b"}, 400, "invalid model name"),
        (
            {"model": "x", "from": "nowhere:1b", "stream": False},
            500,
            "pull model manifest: file does not exist",
        ),
        (
            {"model": "x", "files": {"../m.gguf": "sha256:" + "0" * 64}},
            400,
            "file path must be relative",
        ),
    ):
        r = post(ollama_double, "/api/create", body)
        assert (r.status_code, r.json()) == (status, {"error": message}), body


def test_create_from_an_uploaded_gguf_blob(ollama_double):
    manifest = json.loads(manifest_file(ollama_double, "nomic-embed-text:v1.5").read_bytes())
    gguf = ollama_double.models_dir / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    data = gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data + b"\0").hexdigest()
    url = ollama_double.url + "/api/blobs/" + digest
    assert httpx.head(url).status_code == 404
    assert httpx.post(url, content=data + b"\0").status_code == 201
    assert httpx.head(url).status_code == 200
    assert httpx.post(url, content=b"other").status_code == 200  # already there
    wrong = httpx.post(ollama_double.url + "/api/blobs/sha256:" + "1" * 64, content=b"x")
    assert wrong.status_code == 400 and wrong.json()["error"].startswith("digest mismatch")
    assert httpx.head(ollama_double.url + "/api/blobs/nope").status_code == 400
    c = client(ollama_double)
    assert c.create("embedder", files={"model.gguf": digest}).status == "success"
    shown = c.show("embedder")
    assert shown.capabilities == ["embedding"]
    assert (shown.details.family, shown.details.parameter_size) == ("nomic-bert", "136.73M")
    assert len(c.embed(model="embedder", input="x").embeddings[0]) == 768
    text_digest = "sha256:" + hashlib.sha256(b"not gguf").hexdigest()
    httpx.post(ollama_double.url + "/api/blobs/" + text_digest, content=b"not gguf")
    r = post(
        ollama_double,
        "/api/create",
        {"model": "y", "files": {"m.gguf": text_digest}, "stream": False},
    )
    assert (r.status_code, r.json()) == (400, {"error": "supplied file was not in GGUF format"})


def test_v1_models_is_null_without_models(tmp_path):
    engine = start_ollama_double(tmp_path)
    try:
        r = httpx.get(engine.url + "/v1/models")
        assert r.json() == {"object": "list", "data": None}
        assert r.headers["content-type"] == "application/json"
        assert httpx.get(engine.url + "/api/tags").json() == {"models": []}
    finally:
        engine.stop()

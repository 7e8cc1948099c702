#!/usr/bin/env python3
"""A stand-in for Ollama 0.12 (`ollama` binary: server and CLI) for tests.

Real Ollama needs a multi-gigabyte binary and model download; this double is one
stdlib-only file (Python >= 3.9) that speaks the same wire protocol, so the agent,
`pull-models.sh` and the test VM can be exercised offline. Installed as `/usr/bin/ollama`
in the offline test image only.

Reproduced:
- CLI: `ollama serve` (listens on OLLAMA_HOST: `host`, `host:port`, `:port` or
  `http://host:port`, default 127.0.0.1:11434), and the client commands `pull`, `list`/`ls`,
  `rm`, `run MODEL PROMPT`, `--version`, which talk HTTP to OLLAMA_HOST like the real CLI
  (connection refused -> "Error: could not connect to ollama app, is it running?", exit 1;
  `list` prints the real `NAME  ID  SIZE  MODIFIED` table).
- Pulled models are manifest files under OLLAMA_MODELS (default ~/.ollama/models) in the
  real layout `manifests/registry.ollama.ai/library/NAME/TAG`, so they survive restarts and
  a pre-seeded models directory is listed. No weights are downloaded or stored.
- API: `GET /`, `/api/version`, `/api/tags`, `/api/ps`, `POST /api/show`, `/api/pull`
  (NDJSON progress: pulling manifest, pulling <digest>, verifying sha256 digest, writing
  manifest, success), `DELETE /api/delete`, `POST /api/chat` and `/api/generate` (NDJSON
  stream by default, `stream: false` for one object; the last object has `done: true`,
  `done_reason` and the counters), `/api/embed`, `/api/embeddings`; the OpenAI-compatible
  `/v1/chat/completions`, `/v1/completions` (SSE, `data: [DONE]`), `/v1/models`,
  `/v1/embeddings`. Error bodies and statuses follow Ollama's (404 model not found, 400 bad
  request, 400 "does not support chat" for embedding-only models).
- Answers are deterministic: "Echo: <last user message>", sent one word per chunk, so a test
  can check that content went through. `options.num_predict` / `max_tokens` cut the answer
  and give `done_reason`/`finish_reason` "length". Embeddings are unit vectors derived from
  a hash of the text.

Not reproduced: weights and inference, tools, images, thinking, `format`, `ollama create`,
`push`, `copy`, the interactive `run` prompt.

Fault injection (for reliability tests), as `ollama serve` flags or environment variables:
  --ready-after S     OLLAMA_DOUBLE_READY_AFTER   refuse connections for S seconds after start
  --chunk-delay S     OLLAMA_DOUBLE_CHUNK_DELAY   sleep S seconds before each streamed chunk
  --hang-after N      OLLAMA_DOUBLE_HANG_AFTER    generation: send N chunks, then stall forever
                                                  (0: never answer at all)
  --cut-after N       OLLAMA_DOUBLE_CUT_AFTER     generation: send N chunks, then drop the
                                                  connection mid-stream
  --malformed         OLLAMA_DOUBLE_MALFORMED=1   generation: one chunk (or the whole body) is
                                                  broken JSON
  --fail-pulls N      OLLAMA_DOUBLE_FAIL_PULLS    the first N pulls fail with a registry error
"""

# This file also runs on the VM's Python (>= 3.9): no datetime.UTC, no zip(strict=).
# ruff: noqa: UP017, B905

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "0.12.3"
DEFAULT_PORT = 11434
REGISTRY = "registry.ollama.ai"

# Sizes and details of the models Cube pulls by default; any other valid name pulls as a
# generic small llama model.
CATALOGUE = {
    "llama3.2:3b": {
        "size": 2019393189,
        "family": "llama",
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
        "context_length": 131072,
        "embedding_length": 3072,
        "capabilities": ["completion", "tools"],
    },
    "starcoder2:3b": {
        "size": 1711884003,
        "family": "starcoder2",
        "parameter_size": "3B",
        "quantization_level": "Q4_0",
        "context_length": 16384,
        "embedding_length": 3072,
        "capabilities": ["completion", "insert"],
    },
    "nomic-embed-text:v1.5": {
        "size": 274302450,
        "family": "nomic-bert",
        "parameter_size": "137M",
        "quantization_level": "F16",
        "context_length": 2048,
        "embedding_length": 768,
        "capabilities": ["embedding"],
    },
}
CATALOGUE["nomic-embed-text:latest"] = CATALOGUE["nomic-embed-text:v1.5"]

NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
NAME_RE = re.compile(
    rf"^(?:{NAME_PART}/){{0,2}}{NAME_PART}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,79}})?$"
)


def dumps(obj):
    """JSON as Go writes it: no spaces."""
    return json.dumps(obj, separators=(",", ":"))


KEEP_ALIVE = 300  # seconds a model stays "loaded" after use, as Ollama's default


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------- names, store


def split_name(name):
    """'llama3.2' -> ('registry.ollama.ai', 'library', 'llama3.2', 'latest')."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ApiError(400, "invalid model name")
    path, _, tag = name.partition(":")
    parts = path.split("/")
    if len(parts) == 1:
        parts = [REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [REGISTRY, *parts]
    return parts[0], parts[1], parts[2], tag or "latest"


def display_name(parts):
    """How Ollama shows a name: short for the default registry and namespace."""
    host, namespace, model, tag = parts
    if host != REGISTRY:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace != "library":
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def model_facts(name):
    facts = CATALOGUE.get(name)
    if facts:
        return facts
    return {
        "size": 100_000_000 + int(sha256(name)[:8], 16) % 900_000_000,
        "family": "llama",
        "parameter_size": "1B",
        "quantization_level": "Q4_K_M",
        "context_length": 8192,
        "embedding_length": 2048,
        "capabilities": ["completion"],
    }


def now_iso():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Store:
    """Pulled models as manifest files, in Ollama's own directory layout."""

    def __init__(self, root):
        self.root = Path(root)
        self.lock = threading.Lock()

    def manifest_path(self, parts):
        return self.root.joinpath("manifests", *parts)

    def manifest_for(self, name):
        parts = split_name(name)
        facts = model_facts(display_name(parts))
        layers = [
            ("application/vnd.ollama.image.model", facts["size"] - 1000),
            ("application/vnd.ollama.image.template", 600),
            ("application/vnd.ollama.image.params", 400),
        ]
        return {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": "sha256:" + sha256(name + "/config"),
                "size": 561,
            },
            "layers": [
                {"mediaType": kind, "digest": "sha256:" + sha256(f"{name}/{kind}"), "size": size}
                for kind, size in layers
            ],
        }

    def save(self, name, manifest):
        path = self.manifest_path(split_name(name))
        with self.lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(dumps(manifest))
            tmp.replace(path)

    def find(self, name):
        """The stored model as Ollama's /api/tags entry, or None."""
        parts = split_name(name)
        path = self.manifest_path(parts)
        if not path.is_file():
            return None
        raw = path.read_bytes()
        manifest = json.loads(raw)
        shown = display_name(parts)
        facts = model_facts(shown)
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        modified = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).astimezone()
        return {
            "name": shown,
            "model": shown,
            "modified_at": modified.isoformat(),
            "size": size,
            "digest": hashlib.sha256(raw).hexdigest(),
            "details": details(facts),
        }

    def all(self):
        base = self.root / "manifests"
        found = []
        for path in sorted(base.glob("*/*/*/*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                host, namespace, model, tag = path.relative_to(base).parts
                entry = self.find(display_name((host, namespace, model, tag)))
                if entry:
                    found.append(entry)
        found.sort(key=lambda m: m["modified_at"], reverse=True)
        return found

    def delete(self, name):
        path = self.manifest_path(split_name(name))
        with self.lock:
            if not path.is_file():
                return False
            path.unlink()
            return True


def details(facts):
    return {
        "parent_model": "",
        "format": "gguf",
        "family": facts["family"],
        "families": [facts["family"]],
        "parameter_size": facts["parameter_size"],
        "quantization_level": facts["quantization_level"],
    }


# ---------------------------------------------------------------------------- answers


def reply_words(text):
    """The deterministic answer, as the chunks a stream sends: 'Echo: a b' -> 3 chunks."""
    words = ["Echo:", *(text.split() or ["(empty)"])]
    return [words[0]] + [" " + w for w in words[1:]]


def limit(words, max_tokens):
    if isinstance(max_tokens, int) and 0 <= max_tokens < len(words):
        return words[:max_tokens], "length"
    return words, "stop"


def count_tokens(text):
    return max(1, len(text.split()))


def embedding(text, dims):
    """A unit vector derived from the text: equal texts give equal vectors."""
    values = []
    seed = text.encode()
    while len(values) < dims:
        seed = hashlib.sha256(seed).digest()
        values.extend(b / 127.5 - 1.0 for b in seed)
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def message_text(content):
    """Chat content is a string, or (OpenAI) a list of parts."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def last_user_text(messages):
    if not isinstance(messages, list):
        raise ApiError(400, "messages must be a list")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


# ---------------------------------------------------------------------------- server


class Faults:
    def __init__(self, args):
        self.chunk_delay = args.chunk_delay
        self.hang_after = args.hang_after
        self.cut_after = args.cut_after
        self.malformed = args.malformed
        self.fail_pulls = args.fail_pulls
        self.lock = threading.Lock()

    def take_pull_failure(self):
        with self.lock:
            if self.fail_pulls > 0:
                self.fail_pulls -= 1
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (aiohttp pools) would otherwise wait ~40 ms per request
    # on Nagle + delayed ACK, as a real engine on Go or uvicorn does not.
    disable_nagle_algorithm = True
    server_version = "ollama-double/" + VERSION

    def version_string(self):
        return self.server_version

    # -- plumbing

    def log_message(self, fmt, *args):
        stamp = time.strftime("%Y/%m/%d - %H:%M:%S")
        sys.stderr.write(f"[GIN] {stamp} | {self.client_address[0]} | {fmt % args}\n")

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        path = self.path.split("?", 1)[0]
        route = ROUTES.get((method, path))
        if route is None and method == "HEAD":
            route = ROUTES.get(("GET", path))
        if route is None and method == "GET" and path.startswith("/v1/models/"):
            route = Handler.v1_model
        try:
            if route is None:
                self.read_body()
                self.send_text(404, "404 page not found")
                return
            route(self)
        except ApiError as e:
            if path.startswith("/v1/"):
                self.send_json(e.status, openai_error(e.status, e.message))
            else:
                self.send_json(e.status, {"error": e.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self):
        raw = self.read_body()
        if not raw.strip():
            raise ApiError(400, "missing request body")
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, f"invalid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def send_bytes(self, status, data, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, status, text):
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def send_json(self, status, obj):
        self.send_bytes(status, dumps(obj).encode(), "application/json; charset=utf-8")

    def send_stream(self, chunks, content_type, generation=False):
        """Send an iterable of byte strings with chunked encoding, applying the faults."""
        faults = self.server.faults if generation else None
        if faults and faults.hang_after == 0:
            self.hang()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for sent, data in enumerate(chunks):
            if faults:
                if sent == faults.cut_after:
                    self.cut()
                    return
                if sent == faults.hang_after:
                    self.hang()
                if faults.malformed and sent == 1:
                    data = data[: len(data) // 2] + b"\n"
            if self.server.faults.chunk_delay:
                time.sleep(self.server.faults.chunk_delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def send_answer(self, obj, content_type="application/json; charset=utf-8"):
        """A one-object generation answer, with the faults applied."""
        faults = self.server.faults
        data = dumps(obj).encode()
        if faults.hang_after is not None:
            self.hang()
        if faults.malformed:
            data = data[: len(data) // 2]
        if faults.cut_after is not None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.cut()
            return
        self.send_bytes(200, data, content_type)

    def hang(self):
        while True:
            time.sleep(3600)

    def cut(self):
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # -- models

    def require_model(self, body, key="model"):
        name = body.get(key) or body.get("name")
        if not name:
            raise ApiError(400, "model is required")
        entry = self.server.store.find(name)
        if entry is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        return name, entry

    def mark_loaded(self, name, entry, keep_alive=None):
        loaded = self.server.loaded
        if keep_alive in (0, "0", "0s"):
            loaded.pop(entry["name"], None)
            return
        loaded[entry["name"]] = (entry, time.time() + KEEP_ALIVE)

    def root(self):
        self.send_text(200, "Ollama is running")

    def version(self):
        self.send_json(200, {"version": VERSION})

    def tags(self):
        self.send_json(200, {"models": self.server.store.all()})

    def ps(self):
        now = time.time()
        models = []
        for name, (entry, expires) in list(self.server.loaded.items()):
            if expires < now:
                self.server.loaded.pop(name, None)
                continue
            expires_at = datetime.fromtimestamp(expires, timezone.utc).astimezone()
            models.append(
                {
                    **{k: entry[k] for k in ("name", "model", "size", "digest", "details")},
                    "expires_at": expires_at.isoformat(),
                    "size_vram": 0,
                    "context_length": 4096,
                }
            )
        self.send_json(200, {"models": models})

    def show(self):
        body = self.json_body()
        name = body.get("model") or body.get("name")
        if not name:
            raise ApiError(400, "model is required")
        entry = self.server.store.find(name)
        if entry is None:
            raise ApiError(404, f"model '{name}' not found")
        facts = model_facts(entry["name"])
        arch = facts["family"]
        self.send_json(
            200,
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {entry["name"]}\n',
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": entry["details"],
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": facts["size"] * 2,
                    f"{arch}.context_length": facts["context_length"],
                    f"{arch}.embedding_length": facts["embedding_length"],
                },
                "capabilities": facts["capabilities"],
                "modified_at": entry["modified_at"],
            },
        )

    def pull(self):
        body = self.json_body()
        name = body.get("model") or body.get("name")
        if not name:
            raise ApiError(400, "model is required")
        store = self.server.store
        manifest = store.manifest_for(name)  # validates the name first
        fail = self.server.faults.take_pull_failure()

        def progress():
            yield {"status": "pulling manifest"}
            if fail:
                yield {
                    "error": 'pull model manifest: Get "https://registry.ollama.ai/v2/": '
                    "dial tcp: connection reset by peer"
                }
                return
            for layer in manifest["layers"]:
                digest, total = layer["digest"], layer["size"]
                status = "pulling " + digest[7:19]
                for completed in (0, total // 2, total):
                    yield {
                        "status": status,
                        "digest": digest,
                        "total": total,
                        "completed": completed,
                    }
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            store.save(name, manifest)
            yield {"status": "success"}

        if body.get("stream", True):
            lines = (dumps(p).encode() + b"\n" for p in progress())
            self.send_stream(lines, "application/x-ndjson")
            return
        last = None
        for last in progress():
            if "error" in last:
                raise ApiError(500, last["error"])
        self.send_json(200, last)

    def delete(self):
        body = self.json_body()
        name = body.get("model") or body.get("name")
        if not name:
            raise ApiError(400, "model is required")
        entry = self.server.store.find(name)
        if entry is None or not self.server.store.delete(name):
            raise ApiError(404, f"model '{name}' not found")
        self.server.loaded.pop(entry["name"], None)
        self.send_bytes(200, b"", "text/plain; charset=utf-8")

    # -- generation (native API)

    def generation(self, body, kind, words, prompt_tokens):
        """Stream or answer a /api/chat or /api/generate request."""
        model = body["model"]
        started = time.monotonic_ns()
        options = body.get("options") or {}
        words, reason = limit(words, options.get("num_predict"))

        def piece(text):
            if kind == "chat":
                return {"message": {"role": "assistant", "content": text}}
            return {"response": text}

        def final(text):
            total = time.monotonic_ns() - started
            last = {
                "model": model,
                "created_at": now_iso(),
                **piece(text),
                "done": True,
                "done_reason": reason,
                "total_duration": total,
                "load_duration": total // 10,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": total // 10,
                "eval_count": len(words),
                "eval_duration": total // 2,
            }
            if kind == "generate":
                last["context"] = [int(sha256(w)[:4], 16) for w in words]
            return last

        if body.get("stream", True):

            def lines():
                for word in words:
                    part = {"model": model, "created_at": now_iso(), **piece(word), "done": False}
                    yield dumps(part).encode() + b"\n"
                yield dumps(final("")).encode() + b"\n"

            self.send_stream(lines(), "application/x-ndjson", generation=True)
        else:
            self.send_answer(final("".join(words)))

    def chat(self):
        body = self.json_body()
        name, entry = self.require_model(body)
        facts = model_facts(entry["name"])
        if "completion" not in facts["capabilities"]:
            raise ApiError(400, f'"{name}" does not support chat')
        messages = body.get("messages") or []
        text = last_user_text(messages)
        self.mark_loaded(name, entry, body.get("keep_alive"))
        if not messages:  # an empty chat only loads (or unloads) the model
            reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
            self.send_json(
                200,
                {
                    "model": name,
                    "created_at": now_iso(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": reason,
                    "done": True,
                },
            )
            return
        tokens = sum(
            count_tokens(message_text(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        self.generation(body, "chat", reply_words(text), tokens)

    def generate(self):
        body = self.json_body()
        name, entry = self.require_model(body)
        facts = model_facts(entry["name"])
        if "completion" not in facts["capabilities"]:
            raise ApiError(400, f'"{name}" does not support generate')
        prompt = body.get("prompt") or ""
        self.mark_loaded(name, entry, body.get("keep_alive"))
        if not prompt:
            reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
            self.send_json(
                200,
                {
                    "model": name,
                    "created_at": now_iso(),
                    "response": "",
                    "done": True,
                    "done_reason": reason,
                },
            )
            return
        self.generation(body, "generate", reply_words(prompt), count_tokens(prompt))

    def embed(self):
        body = self.json_body()
        name, entry = self.require_model(body)
        started = time.monotonic_ns()
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise ApiError(400, "invalid input type")
        dims = body.get("dimensions") or model_facts(entry["name"])["embedding_length"]
        self.mark_loaded(name, entry, body.get("keep_alive"))
        total = time.monotonic_ns() - started
        self.send_json(
            200,
            {
                "model": name,
                "embeddings": [embedding(text, dims) for text in inputs],
                "total_duration": total,
                "load_duration": total // 10,
                "prompt_eval_count": sum(count_tokens(t) for t in inputs),
            },
        )

    def embeddings(self):
        body = self.json_body()
        name, entry = self.require_model(body)
        prompt = body.get("prompt") or ""
        self.mark_loaded(name, entry, body.get("keep_alive"))
        dims = model_facts(entry["name"])["embedding_length"]
        self.send_json(200, {"embedding": embedding(prompt, dims) if prompt else []})

    # -- OpenAI-compatible API

    def v1_models(self):
        data = [openai_model(m) for m in self.server.store.all()]
        self.send_json(200, {"object": "list", "data": data})

    def v1_model(self):
        name = self.path.split("?", 1)[0][len("/v1/models/") :]
        entry = self.server.store.find(name) if NAME_RE.match(name) else None
        if entry is None:
            raise ApiError(404, f"model '{name}' not found")
        self.send_json(200, openai_model(entry))

    def v1_generation(self, kind):
        body = self.json_body()
        name, entry = self.require_model(body)
        if kind == "chat":
            messages = body.get("messages")
            text = last_user_text(messages)
            prompt_tokens = sum(
                count_tokens(message_text(m.get("content")))
                for m in messages
                if isinstance(m, dict)
            )
        else:
            text = body.get("prompt")
            if not isinstance(text, str):
                raise ApiError(400, "invalid prompt: prompt must be a string")
            prompt_tokens = count_tokens(text)
        self.mark_loaded(name, entry)
        words, reason = limit(reply_words(text), body.get("max_tokens"))
        prefix, obj = (
            ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
        )
        ident = f"{prefix}-{int(time.time() * 1000) % 1000}"
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        head = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": name,
            "system_fingerprint": "fp_ollama",
        }

        def choice(text, finish, stream):
            if kind == "chat":
                key = "delta" if stream else "message"
                return {
                    "index": 0,
                    key: {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            return {"text": text, "index": 0, "finish_reason": finish}

        if not body.get("stream"):
            self.send_answer(
                {**head, "choices": [choice("".join(words), reason, False)], "usage": usage}
            )
            return
        if kind == "chat":
            head["object"] = "chat.completion.chunk"
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        def events():
            for word in words:
                yield {**head, "choices": [choice(word, None, True)]}
            yield {**head, "choices": [choice("", reason, True)]}
            if include_usage:
                yield {**head, "choices": [], "usage": usage}

        lines = (b"data: " + dumps(e).encode() + b"\n\n" for e in events())
        self.send_stream(with_done(lines), "text/event-stream", generation=True)

    def v1_chat(self):
        self.v1_generation("chat")

    def v1_completions(self):
        self.v1_generation("completion")

    def v1_embeddings(self):
        body = self.json_body()
        name, entry = self.require_model(body)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs or not all(isinstance(i, str) for i in inputs):
            raise ApiError(400, "invalid input")
        dims = body.get("dimensions") or model_facts(entry["name"])["embedding_length"]
        tokens = sum(count_tokens(t) for t in inputs)
        self.send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": embedding(t, dims), "index": i}
                    for i, t in enumerate(inputs)
                ],
                "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def with_done(lines):
    yield from lines
    yield b"data: [DONE]\n\n"


def openai_model(entry):
    created = int(datetime.fromisoformat(entry["modified_at"]).timestamp())
    parts = split_name(entry["name"])
    return {"id": entry["name"], "object": "model", "created": created, "owned_by": parts[1]}


def openai_error(status, message):
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


ROUTES = {
    ("GET", "/"): Handler.root,
    ("GET", "/api/version"): Handler.version,
    ("GET", "/api/tags"): Handler.tags,
    ("GET", "/api/ps"): Handler.ps,
    ("POST", "/api/show"): Handler.show,
    ("POST", "/api/pull"): Handler.pull,
    ("DELETE", "/api/delete"): Handler.delete,
    ("POST", "/api/chat"): Handler.chat,
    ("POST", "/api/generate"): Handler.generate,
    ("POST", "/api/embed"): Handler.embed,
    ("POST", "/api/embeddings"): Handler.embeddings,
    ("GET", "/v1/models"): Handler.v1_models,
    ("POST", "/v1/chat/completions"): Handler.v1_chat,
    ("POST", "/v1/completions"): Handler.v1_completions,
    ("POST", "/v1/embeddings"): Handler.v1_embeddings,
}


# ---------------------------------------------------------------------------- CLI


def parse_host(value):
    """OLLAMA_HOST as Ollama reads it -> (host, port); an empty host means every address."""
    value = (value or "").strip() or f"127.0.0.1:{DEFAULT_PORT}"
    scheme, sep, rest = value.partition("://")
    default_port = DEFAULT_PORT
    if not sep:
        rest = value
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = rest.split("/", 1)[0]
    match = re.match(r"^(\[[^\]]*\]|[^:]*)(?::(\d+))?$", hostport)
    if not match:
        raise ValueError(f"invalid OLLAMA_HOST {value!r}")
    host, port = match.group(1).strip("[]"), match.group(2)
    if port is None:
        return host or "127.0.0.1", default_port
    return host, int(port)


def env_number(name, kind, default):
    raw = os.environ.get(name, "")
    try:
        return kind(raw) if raw else default
    except ValueError:
        sys.exit(f"Error: {name}: not a number: {raw!r}")


def serve(args):
    try:
        host, port = parse_host(os.environ.get("OLLAMA_HOST"))
    except ValueError as e:
        sys.exit(f"Error: {e}")
    models = os.environ.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
    if args.ready_after:
        time.sleep(args.ready_after)  # "still starting": connections are refused meanwhile
    ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ThreadingHTTPServer.allow_reuse_address = True
    # socketserver listens with a backlog of 5: bursts of clients would be dropped and
    # retried by the kernel seconds later, which no real engine does.
    ThreadingHTTPServer.request_queue_size = 128
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        sys.exit(f"Error: listen tcp {host}:{port}: bind: {e.strerror.lower()}")
    server.daemon_threads = True
    server.store = Store(models)
    server.loaded = {}
    server.faults = Faults(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(
        f'time={now_iso()} level=INFO msg="Listening on {host}:{port} '
        f'(version {VERSION})" models={models}\n'
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


class Client:
    def __init__(self):
        host, port = parse_host(os.environ.get("OLLAMA_HOST"))
        if ":" in host:
            host = f"[{host}]"
        self.base = f"http://{host or '127.0.0.1'}:{port}"

    def open(self, method, path, body=None, timeout=None):
        data = dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                message = json.loads(raw).get("error", raw)
            except ValueError:
                message = raw.strip() or e.reason
            raise CliError(message) from None
        except (urllib.error.URLError, ConnectionError) as e:
            raise CliError("could not connect to ollama app, is it running?") from e

    def stream(self, method, path, body):
        with self.open(method, path, body) as response:
            for line in response:
                if line.strip():
                    part = json.loads(line)
                    if "error" in part:
                        raise CliError(part["error"])
                    yield part


class CliError(Exception):
    pass


def human_bytes(size):
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_time(iso):
    seconds = time.time() - datetime.fromisoformat(iso).timestamp()
    for unit, scale in (
        ("year", 31536000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        n = int(seconds // scale)
        if n == 1:
            return f"About a{'n' if unit == 'hour' else ''} {unit} ago"
        if n > 1:
            return f"{n} {unit}s ago"
    n = int(seconds)
    return "Less than a second ago" if n < 1 else f"{n} second{'s' if n > 1 else ''} ago"


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("    ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def cmd_list(client, args):
    with client.open("GET", "/api/tags") as response:
        models = json.load(response)["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [
        [m["name"], m["digest"][:12], human_bytes(m["size"]), human_time(m["modified_at"])]
        for m in models
    ]
    print(table(rows))


def cmd_pull(client, args):
    shown = set()
    for part in client.stream("POST", "/api/pull", {"model": args.model, "stream": True}):
        status = part.get("status", "")
        if "total" in part:
            if part.get("completed") == part["total"] and status not in shown:
                shown.add(status)
                print(f"{status}: 100% {human_bytes(part['total'])}", file=sys.stderr)
        else:
            print(status, file=sys.stderr)


def cmd_rm(client, args):
    for name in args.models:
        client.open("DELETE", "/api/delete", {"model": name}).close()
        print(f"deleted '{name}'")


def cmd_run(client, args):
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    for part in client.stream("POST", "/api/generate", {"model": args.model, "prompt": prompt}):
        sys.stdout.write(part.get("response", ""))
        sys.stdout.flush()
    print("\n")


def cmd_version(client):
    try:
        with client.open("GET", "/api/version", timeout=5) as response:
            print(f"ollama version is {json.load(response)['version']}")
    except CliError:
        print("Warning: could not connect to a running Ollama instance", file=sys.stderr)
        print(f"Warning: client version is {VERSION}", file=sys.stderr)


def parser():
    p = argparse.ArgumentParser(prog="ollama", description="Ollama double (tests only)")
    p.add_argument("-v", "--version", action="store_true", help="show version information")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="start the server")
    s.add_argument(
        "--ready-after", type=float, default=env_number("OLLAMA_DOUBLE_READY_AFTER", float, 0.0)
    )
    s.add_argument(
        "--chunk-delay", type=float, default=env_number("OLLAMA_DOUBLE_CHUNK_DELAY", float, 0.0)
    )
    s.add_argument(
        "--hang-after", type=int, default=env_number("OLLAMA_DOUBLE_HANG_AFTER", int, None)
    )
    s.add_argument(
        "--cut-after", type=int, default=env_number("OLLAMA_DOUBLE_CUT_AFTER", int, None)
    )
    s.add_argument(
        "--malformed",
        action="store_true",
        default=os.environ.get("OLLAMA_DOUBLE_MALFORMED", "") not in ("", "0"),
    )
    s.add_argument("--fail-pulls", type=int, default=env_number("OLLAMA_DOUBLE_FAIL_PULLS", int, 0))
    sub.add_parser("list", aliases=["ls"], help="list models")
    s = sub.add_parser("pull", help="pull a model")
    s.add_argument("model")
    s = sub.add_parser("rm", help="remove models")
    s.add_argument("models", nargs="+")
    s = sub.add_parser("run", help="answer one prompt")
    s.add_argument("model")
    s.add_argument("prompt", nargs="*")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    try:
        client = Client()
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    if args.version:
        cmd_version(client)
        return 0
    commands = {"list": cmd_list, "ls": cmd_list, "pull": cmd_pull, "rm": cmd_rm, "run": cmd_run}
    if args.command not in commands:
        parser().print_help()
        return 0
    try:
        commands[args.command](client, args)
    except CliError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A stand-in for vLLM 0.10's OpenAI-compatible server (`vllm serve`) for tests.

vLLM cannot be installed here (CUDA-only, no GPU); this double is one stdlib-only file
(Python >= 3.9) with the same command line and wire format, so the agent and the test VM
can be exercised offline. Installed as `/usr/bin/vllm` in the offline test image only.

Reproduced:
- CLI: `vllm serve MODEL [--host H] [--port P] [--gpu-memory-utilization X]
  [--max-model-len N] [--served-model-name NAME] [--api-key KEY] [--task embed] ...`; other
  flags are accepted. Like vLLM, the startup log prints `non-default args: {...}`, so a test can
  check what the service passed. `vllm --version` prints the version.
- API: `GET /health` (200, empty), `/ping`, `/version`, `/v1/models` (with `max_model_len`),
  `POST /v1/chat/completions` and `/v1/completions`, plain and SSE streaming (first chunk
  carries the role, last one the `finish_reason`, then a usage chunk when
  `stream_options.include_usage`, then `data: [DONE]`), `/v1/embeddings` (floats or base64,
  only when started with `--task embed` / `--runner pooling`, as vLLM).
- Errors in vLLM's shape `{"error":{"message":…,"type":…,"param":null,"code":…}}`:
  404 NotFoundError for an unknown model, 400 "Bad Request" for a body that is not JSON, lacks
  a field or is not sent as `application/json`, 400 BadRequestError for prompts plus
  `max_tokens` beyond `--max-model-len`, 401 `{"error":"Unauthorized"}` with `--api-key`.
  Also as vLLM 0.10.2 does: a JSON body that is not an object gets a plain-text 500, and
  `/v1/embeddings` on a model that does not embed answers **200** with an error body.
- The answers' and chunks' keys and value types are vLLM 0.10.2's (fields the double has no
  value for are null), checked against the real server by
  tests/doubles_test/test_openai_double_contract.py.
- Answers are deterministic: "Echo: <last user message>", one word per chunk; a token is a
  word. `max_tokens` cuts the answer (`finish_reason: "length"`).

- Chat templates: vLLM refuses chat for a model whose tokenizer has none unless
  `--chat-template FILE` is given. The double knows DialoGPT (the image's default model) as
  such a model and answers its chats with vLLM's 400 unless the flag names a readable file.

Not reproduced: inference, tools, logprobs, `n > 1`, templates of other models.

Fault injection (for reliability tests), as `vllm serve` flags or environment variables:
  --ready-after S     VLLM_DOUBLE_READY_AFTER   refuse connections for S seconds after start
  --chunk-delay S     VLLM_DOUBLE_CHUNK_DELAY   sleep S seconds before each streamed chunk
  --hang-after N      VLLM_DOUBLE_HANG_AFTER    generation: send N chunks, then stall forever
                                                (0: never answer at all)
  --cut-after N       VLLM_DOUBLE_CUT_AFTER     generation: send N chunks, then drop the
                                                connection mid-stream
  --malformed         VLLM_DOUBLE_MALFORMED=1   generation: one chunk (or the whole body) is
                                                broken JSON
"""

# This file also runs on the VM's Python (>= 3.9).

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import signal
import socket
import struct
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.10.2"
DEFAULTS = {
    "host": None,
    "port": 8000,
    "gpu_memory_utilization": 0.9,
    "max_model_len": None,
    "served_model_name": None,
    "api_key": None,
    "task": "auto",
    "runner": "auto",
    "chat_template": None,
}
# Models whose tokenizer ships no chat template (matched by name).
NO_CHAT_TEMPLATE = ("DialoGPT",)
DEFAULT_MAX_MODEL_LEN = 2048  # when not given; real vLLM reads it from the model's config
EMBEDDING_DIMS = 384


class ApiError(Exception):
    def __init__(self, status, message, kind=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "Error")

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": None,
                          "code": self.status}}  # fmt: skip


class InvalidRequest(ApiError):
    """What FastAPI's request validation refuses (vLLM's type for it: "Bad Request")."""

    def __init__(self, message):
        super().__init__(400, message, "Bad Request")


class ServerError(Exception):
    """vLLM's uncaught exceptions: a plain-text 500."""


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def count_tokens(text):
    return max(1, len(text.split()))


def reply_words(text):
    """The deterministic answer, as the chunks a stream sends: 'Echo: a b' -> 3 chunks."""
    words = ["Echo:", *(text.split() or ["(empty)"])]
    return [words[0]] + [" " + w for w in words[1:]]


def embedding(text, dims):
    """A unit vector derived from the text: equal texts give equal vectors."""
    values = []
    seed = text.encode()
    while len(values) < dims:
        seed = hashlib.sha256(seed).digest()
        values.extend(b / 127.5 - 1.0 for b in seed)
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def message_text(content):
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (aiohttp pools) would otherwise wait ~40 ms per request
    # on Nagle + delayed ACK, as a real engine on Go or uvicorn does not.
    disable_nagle_algorithm = True
    server_version = "uvicorn"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        sys.stderr.write(f"INFO:     {self.client_address[0]} - {fmt % args}\n")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        path = self.path.split("?", 1)[0]
        route = ROUTES.get((method, path))
        try:
            if route is None:
                self.read_body()
                self.send_json(404, {"detail": "Not Found"})
                return
            if path.startswith("/v1/") and not self.authorized():
                self.read_body()
                self.send_json(401, {"error": "Unauthorized"})
                return
            route(self)
        except ApiError as e:
            self.send_json(e.status, e.body())
        except ServerError:
            self.send_bytes(500, b"Internal Server Error", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def authorized(self):
        key = self.server.args.api_key
        return not key or self.headers.get("Authorization") == f"Bearer {key}"

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self):
        raw = self.read_body()
        media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise InvalidRequest(
                " [\"Unsupported Media Type: Only 'application/json' is allowed\"]"
            )
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise InvalidRequest(f"JSON decode error: {e}") from None
        if not isinstance(body, dict):
            raise ServerError()  # vLLM 0.10.2 fails on it
        return body

    def send_bytes(self, status, data, content_type):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, obj):
        self.send_bytes(status, dumps(obj).encode(), "application/json")

    def send_stream(self, chunks):
        """Server-sent events with chunked encoding, applying the faults."""
        args = self.server.args
        if args.hang_after == 0:
            self.hang()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for sent, data in enumerate(chunks):
            if sent == args.cut_after:
                self.cut()
                return
            if sent == args.hang_after:
                self.hang()
            if args.malformed and sent == 1:
                data = data[: len(data) // 2] + b"\n\n"
            if args.chunk_delay:
                time.sleep(args.chunk_delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def send_answer(self, obj):
        """A one-object generation answer, with the faults applied."""
        args = self.server.args
        data = dumps(obj).encode()
        if args.hang_after is not None:
            self.hang()
        if args.malformed:
            data = data[: len(data) // 2]
        if args.cut_after is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.cut()
            return
        self.send_bytes(200, data, "application/json")

    def hang(self):
        while True:
            time.sleep(3600)

    def cut(self):
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # -- routes

    def health(self):
        self.send_bytes(200, b"", None)

    def version(self):
        self.send_json(200, {"version": VERSION})

    def models(self):
        args = self.server.args
        model = {
            "id": args.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": args.model,
            "parent": None,
            "max_model_len": args.max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{uuid.uuid4().hex}",
                    "object": "model_permission",
                    "created": int(time.time()),
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        self.send_json(200, {"object": "list", "data": [model]})

    def check_model(self, body):
        name = body.get("model") or self.server.args.served_model_name
        if name != self.server.args.served_model_name:
            raise ApiError(404, f"The model `{name}` does not exist.")
        return name

    def check_chat_template(self, name):
        if self.server.args.chat_template or not any(m in name for m in NO_CHAT_TEMPLATE):
            return
        raise ApiError(
            400,
            "As of transformers v4.44, default chat template is no longer allowed, so you must "
            "provide a chat template if the tokenizer does not define one.",
        )

    def max_tokens(self, body, prompt_tokens):
        limit = self.server.args.max_model_len
        wanted = body.get("max_completion_tokens") or body.get("max_tokens")
        if wanted is None:
            return limit - prompt_tokens
        if not isinstance(wanted, int) or wanted < 1:
            raise ApiError(400, f"max_tokens must be at least 1, got {wanted}.")
        if prompt_tokens + wanted > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, "
                f"{wanted} in the completion). Please reduce the length of the messages or "
                "completion.",
            )
        return wanted

    def generation(self, kind):
        body = self.json_body()
        name = self.check_model(body)
        if kind == "chat":
            self.check_chat_template(name)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise InvalidRequest("messages: Field required")
            prompt_tokens = sum(
                count_tokens(message_text(m.get("content")))
                for m in messages
                if isinstance(m, dict)
            )
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            text = message_text(users[-1].get("content")) if users else ""
        else:
            text = body.get("prompt")
            if isinstance(text, list) and len(text) == 1:
                text = text[0]
            if not isinstance(text, str):
                raise InvalidRequest("prompt: Input should be a valid string")
            prompt_tokens = count_tokens(text)
        budget = self.max_tokens(body, prompt_tokens)
        words = reply_words(text)
        reason = "stop"
        if len(words) > budget:
            words, reason = words[:budget], "length"
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(words),
            "completion_tokens": len(words),
            "prompt_tokens_details": None,
        }
        if kind == "chat":
            prefix, obj = "chatcmpl", "chat.completion"
        else:
            prefix, obj = "cmpl", "text_completion"
        head = {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": obj,
            "created": int(time.time()),
            "model": name,
        }

        chat = kind == "chat"
        if not body.get("stream"):
            if chat:
                message = {"role": "assistant", "content": "".join(words), "refusal": None,
                           "annotations": None, "audio": None, "function_call": None,
                           "tool_calls": [], "reasoning_content": None}  # fmt: skip
                part = {"message": message}
            else:
                part = {"text": "".join(words)}
            answer = {**head, "choices": [{"index": 0, **part, "logprobs": None,
                                           "finish_reason": reason, "stop_reason": None,
                                           "token_ids": None}]}  # fmt: skip
            if not chat:
                answer["choices"][0].update(prompt_logprobs=None, prompt_token_ids=None)
            answer.update(service_tier=None, system_fingerprint=None, usage=usage)
            if chat:
                answer.update(prompt_logprobs=None, prompt_token_ids=None)
            answer["kv_transfer_params"] = None
            self.send_answer(answer)
            return
        if chat:
            head["object"] = "chat.completion.chunk"
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        def chunk(text, finish=None, first=False):
            """One streamed piece; vLLM sends stop_reason only with the finish_reason."""
            part = {"delta": {"content": text}} if chat else {"text": text}
            c = {"index": 0, **part, "logprobs": None, "finish_reason": finish}
            if finish:
                c["stop_reason"] = None
            if not chat:
                c["stop_reason"] = None
                c["prompt_token_ids"] = list(range(prompt_tokens)) if first else None
            c["token_ids"] = None
            return {**head, "choices": [c]} if chat else {**head, "choices": [c], "usage": None}

        def events():
            if chat:
                role = {"index": 0, "delta": {"role": "assistant", "content": ""},
                        "logprobs": None, "finish_reason": None}  # fmt: skip
                yield {**head, "choices": [role], "prompt_token_ids": None}
            # Cut by max_tokens, vLLM finishes with the last piece; at the end of the text,
            # with one more, empty (the end-of-text token writes nothing).
            last = len(words) - 1 if reason == "length" else None
            for i, word in enumerate(words):
                yield chunk(word, reason if i == last else None, first=i == 0)
            if last is None:
                yield chunk("", reason)
            if include_usage:
                counts = {k: v for k, v in usage.items() if k != "prompt_tokens_details"}
                yield {**head, "choices": [], "usage": counts}

        def lines():
            for event in events():
                yield b"data: " + dumps(event).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        self.send_stream(lines())

    def chat(self):
        self.generation("chat")

    def completions(self):
        self.generation("completion")

    def embeddings(self):
        body = self.json_body()
        name = self.check_model(body)
        args = self.server.args
        if "embed" not in (args.task, args.runner, args.convert) and args.runner != "pooling":
            # vLLM 0.10.2 returns this error object instead of raising it: status 200.
            self.send_json(200, ApiError(400, "The model does not support Embeddings API").body())
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs or not all(isinstance(i, str) for i in inputs):
            raise ApiError(400, "input: Input should be a valid string")
        dims = body.get("dimensions") or EMBEDDING_DIMS
        data = []
        for i, text in enumerate(inputs):
            vector = embedding(text, dims)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"index": i, "object": "embedding", "embedding": vector})
        tokens = sum(count_tokens(t) for t in inputs)
        self.send_json(
            200,
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": name,
                "data": data,
                "usage": {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            },
        )


ROUTES = {
    ("GET", "/health"): Handler.health,
    ("GET", "/ping"): Handler.health,
    ("GET", "/version"): Handler.version,
    ("GET", "/v1/models"): Handler.models,
    ("POST", "/v1/chat/completions"): Handler.chat,
    ("POST", "/v1/completions"): Handler.completions,
    ("POST", "/v1/embeddings"): Handler.embeddings,
}


def env_number(name, kind, default):
    raw = os.environ.get(name, "")
    try:
        return kind(raw) if raw else default
    except ValueError:
        sys.exit(f"Error: {name}: not a number: {raw!r}")


def parser():
    p = argparse.ArgumentParser(prog="vllm", description="vLLM double (tests only)")
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="start the OpenAI-compatible server")
    s.add_argument("model", nargs="?")
    s.add_argument("--model", dest="model_flag")
    s.add_argument("--host", default=DEFAULTS["host"])
    s.add_argument("--port", type=int, default=DEFAULTS["port"])
    s.add_argument(
        "--gpu-memory-utilization", type=float, default=DEFAULTS["gpu_memory_utilization"]
    )
    s.add_argument("--max-model-len", type=int, default=DEFAULTS["max_model_len"])
    s.add_argument("--served-model-name", default=DEFAULTS["served_model_name"])
    s.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY") or DEFAULTS["api_key"])
    s.add_argument("--task", default=DEFAULTS["task"])
    s.add_argument("--chat-template", default=DEFAULTS["chat_template"])
    s.add_argument("--runner", default=DEFAULTS["runner"])
    s.add_argument("--convert", default="auto")
    s.add_argument(
        "--ready-after", type=float, default=env_number("VLLM_DOUBLE_READY_AFTER", float, 0.0)
    )
    s.add_argument(
        "--chunk-delay", type=float, default=env_number("VLLM_DOUBLE_CHUNK_DELAY", float, 0.0)
    )
    s.add_argument(
        "--hang-after", type=int, default=env_number("VLLM_DOUBLE_HANG_AFTER", int, None)
    )
    s.add_argument("--cut-after", type=int, default=env_number("VLLM_DOUBLE_CUT_AFTER", int, None))
    s.add_argument(
        "--malformed",
        action="store_true",
        default=os.environ.get("VLLM_DOUBLE_MALFORMED", "") not in ("", "0"),
    )
    return p


def serve(args, extra):
    args.model = args.model or args.model_flag
    if not args.model:
        sys.exit("vllm serve: error: the model is required (vllm serve MODEL)")
    if not 0 < args.gpu_memory_utilization <= 1:
        sys.exit(
            f"ValueError: GPU memory utilization must be within (0, 1]. "
            f"Got {args.gpu_memory_utilization}."
        )
    # Like vLLM, log what differs from the defaults (other flags are accepted as given).
    changed = {"model": args.model}
    changed.update({k: getattr(args, k) for k, v in DEFAULTS.items() if getattr(args, k) != v})
    if extra:
        changed["unrecognised"] = extra
    if changed.get("api_key"):
        changed["api_key"] = "***"
    sys.stderr.write(
        f"INFO {time.strftime('%m-%d %H:%M:%S')} [api_server.py] vLLM API server "
        f"version {VERSION}\nINFO [utils.py] non-default args: {changed!r}\n"
    )
    if args.chat_template and not os.path.isfile(args.chat_template):
        sys.exit(f"ValueError: chat template file not found: {args.chat_template}")
    args.served_model_name = args.served_model_name or args.model
    args.max_model_len = args.max_model_len or DEFAULT_MAX_MODEL_LEN
    if args.ready_after:
        time.sleep(args.ready_after)  # loading the model: connections are refused meanwhile
    host = args.host or "0.0.0.0"
    ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ThreadingHTTPServer.allow_reuse_address = True
    # socketserver listens with a backlog of 5: bursts of clients would be dropped and
    # retried by the kernel seconds later, which no real engine does.
    ThreadingHTTPServer.request_queue_size = 128
    try:
        server = ThreadingHTTPServer((host, args.port), Handler)
    except OSError as e:
        sys.exit(
            f"OSError: [Errno {e.errno}] error while attempting to bind on address "
            f"({host!r}, {args.port}): {e.strerror.lower()}"
        )
    server.daemon_threads = True
    server.args = args
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(
        f"INFO:     Uvicorn running on http://{host}:{args.port} (Press CTRL+C to quit)\n"
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def main(argv=None):
    p = parser()
    args, extra = p.parse_known_args(argv)
    if args.version:
        print(VERSION)
        return 0
    if args.command != "serve":
        p.print_help()
        return 0 if args.command is None else 2
    return serve(args, extra)


if __name__ == "__main__":
    sys.exit(main())

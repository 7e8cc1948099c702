#!/usr/bin/env python3
"""A stand-in for Ollama 0.12.3 (`ollama` binary: server and CLI) for tests.

Real Ollama needs a multi-gigabyte binary and model download; this double is one
stdlib-only file (Python >= 3.9) that speaks the same wire protocol, so the agent,
`pull-models.sh` and the test VM can be exercised offline. Installed as `/usr/bin/ollama`
in the offline test image only. Every behaviour below was read in Ollama v0.12.3's source
(file named in brackets; `routes.go` is server/routes.go) and is checked by tests/doubles_test.

Reproduced:
- Registry: a fixed catalogue stands in for registry.ollama.ai: llama3.2:3b (= llama3.2,
  completion+tools), starcoder2:3b (completion+insert), nomic-embed-text:v1.5 (= :latest,
  embedding), qwen3:0.6b (completion+tools+thinking), gpt-oss:20b (= gpt-oss; thinks
  always, as the harmony parser returns its analysis channel). Pulling any other name streams
  `{"error":"pull model manifest: file does not exist"}` after "pulling manifest" (500 with
  `stream: false`) and `ollama pull` exits 1 [server/images.go PullModel,
  makeRequestWithRetry]. Progress: "pulling manifest", "pulling <digest[7:19]>" with
  `total`/`completed` (omitted while 0) for every layer then the config, "verifying sha256
  digest", "writing manifest", "success" [server/download.go, api/types.go ProgressResponse].
- Models store, as Ollama lays it out under OLLAMA_MODELS: `manifests/<host>/<ns>/<model>/<tag>`
  and `blobs/sha256-<hex>` holding the config, a small GGUF model file (metadata only) and the
  template/license/params layers, each named by its own sha256 [server/modelpath.go, layer.go,
  manifest.go]. A manifest whose config blob is missing is skipped by /api/tags; chat,
  generate and show on a model with a missing blob are 404 `model 'X' not found`
  [routes.go ListHandler, server/images.go GetModel]. At start, blobs no manifest uses are
  pruned unless OLLAMA_NOPRUNE [routes.go Serve, images.go PruneLayers].
- Capabilities come from the store as Ollama derives them: embedding when the GGUF has
  `<arch>.pooling_type`, else completion; tools/insert when the template uses .Tools/.Suffix;
  thinking when it wraps .Thinking in tags or is gpt-oss [server/images.go Capabilities,
  thinking/template.go].
  Refusals: tools without the tools capability, `think: true` without thinking, `suffix`
  without insert: 400 `<full name> does not support <caps>` (e.g.
  `registry.ollama.ai/library/starcoder2:3b does not support tools`); chat/generate on an
  embedding model: 400 `"X" does not support chat` / `generate`; a string `think` on a model
  that is not gpt-oss: 400 `think value "high" is not supported for this model`
  [server/images.go CheckCapabilities, routes.go ChatHandler/GenerateHandler/scheduleRunner].
- Errors and statuses [routes.go]: chat with an invalid name 400 `model is required`; chat,
  generate, show, delete with an unknown model 404 `model 'X' not found`; generate with no or
  an invalid name 404 `model '' not found`; embed/embeddings/scheduling 404 `model "X" not
  found, try pulling it first`; pull/create with an invalid name 400 `invalid model name`;
  delete 400 `name "X" is invalid`; copy 400 `source "X" is invalid` / 404 `model "X" not
  found`; empty body 400 `missing request body`; bad JSON or field types 400 with
  encoding/json's text [api/types.go: keep_alive "5" -> `time: missing unit in duration
  "5"`, think "max" -> `invalid think value: ...`]; an option of the wrong type 500 `option
  "num_predict" must be of type integer` [api/types.go FromMap]; unknown routes 404 `404 page
  not found`, wrong methods 405 `405 method not allowed` with Allow, a trailing slash
  redirected (gin's router, HandleMethodNotAllowed in routes.go GenerateRoutes).
- OpenAI compatibility [openai/openai.go]: /v1/chat/completions, /v1/completions (SSE ending
  `data: [DONE]`, `stream_options.include_usage`), /v1/embeddings, /v1/models (`"data":
  null` when empty), /v1/models/:model. Errors of the middleware are 400
  `invalid_request_error` (empty messages: `[] is too short - 'messages'`); errors passed on
  from the handler keep their status and are typed `api_error`.
- Generation, deterministic: "Echo: <last user message>" one word a chunk; NDJSON streaming by
  default and when `stream` is null [routes.go `req.Stream != nil && !*req.Stream`], the last
  object `done: true` with `done_reason` and counters. `num_predict`/`max_tokens` cut it
  ("length"), `options.stop` ends it. Empty messages/prompt load the model ("load"), and with
  `keep_alive` 0 unload it ("unload"); `keep_alive` takes Go durations, seconds, -1 forever;
  /api/ps shows what is loaded until it expires. `format: "json"` answers `{"echo": <text>}`
  and a JSON schema an instance of it; another format is the error `invalid format: ...`
  [llm/server.go Completion]. Tool calls and thinking follow the convention shared with the
  OpenAI-only engine (briefs/convention-tools-thinking.md): `call NAME with {JSON}` in the last
  user message of a request offering tool NAME gives one call in `message.tool_calls` (native:
  arguments an object, `index` omitted when 0; /v1: id `call_<8>`, arguments a string,
  `finish_reason: "tool_calls"`, the whole call in one chunk as Ollama streams it); a last
  `tool` message gives `tool said: <content>`; `think: true` gives `thinking about: <last user
  message>` (`message.thinking`, generate's `thinking`, /v1 `reasoning`) before the answer;
  /v1 asks with `reasoning_effort`, a string `think` that only gpt-oss accepts
  [api/types.go, openai/openai.go toChunk/toChatCompletion/fromChatRequest].
- Model management: /api/tags, /api/ps, /api/show (model_info read from the GGUF, modelfile,
  parameters, capabilities), /api/pull, DELETE /api/delete, /api/copy, /api/create (`from` a
  model, or `files` uploaded with POST /api/blobs/:digest; template, system, license,
  parameters, messages), HEAD/POST /api/blobs/:digest [routes.go, server/create.go].
- CORS and Host checks [routes.go GenerateRoutes/allowedHostsMiddleware, envconfig/config.go
  AllowedOrigins, gin-contrib/cors 1.7.2]: requests with an Origin outside OLLAMA_ORIGINS and
  the localhost/127.0.0.1/0.0.0.0/app:// defaults are 403; allowed preflights 204 with the
  Access-Control headers. On a loopback listener a Host header that is neither an IP that is
  loopback/private/unspecified nor localhost, *.localhost, *.local, *.internal or the machine's
  name is 403.
- CLI [cmd/cmd.go]: `serve` (OLLAMA_HOST as envconfig.Host reads it, default
  127.0.0.1:11434), `list`/`ls [PREFIX]`, `ps`, `pull`, `rm`, `cp`, `stop`, `run MODEL
  [PROMPT]` (pulls a missing model; stdin, when not a terminal, is prepended to the prompt;
  thinking printed between "Thinking..." and "...done thinking."), `-v`. Tables as
  tablewriter prints them; sizes and times as format.HumanBytes/HumanTime. With no server:
  `Error: ollama server not responding - could not connect to ollama server, run 'ollama
  serve' to start it`, exit 1 [cmd/start_default.go]; `-v` then prints its two warnings to
  stdout and exits 0.

Not reproduced: weights and inference (the model file holds metadata, no tensors), images and
vision, push, quantize, safetensors import, remote models, the interactive `run` prompt, `ollama
create`/`show` on the command line, progress bars (the CLI prints one line per step), and
encoding/json's exact text for errors nested inside messages or tools.

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
import base64
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "0.12.3"
DEFAULT_PORT = 11434
REGISTRY = "registry.ollama.ai"
MAX_DURATION = 2**63 - 1  # Go's time.Duration(math.MaxInt64): "forever"
DEFAULT_TEMPLATE = "{{ .Prompt }}"  # template.DefaultTemplate


class ApiError(Exception):
    """An error answered as Ollama's {"error": message} with an HTTP status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------- Go's formats


def go_json(obj):
    """JSON as Go's encoding/json writes it: compact, `<`, `>`, `&` escaped, whole floats
    without a fraction."""
    text = json.dumps(_go_floats(obj), separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_floats(obj):
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 1e21:
        return int(obj)
    if isinstance(obj, dict):
        return {k: _go_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_go_floats(v) for v in obj]
    return obj


def go_quote(text):
    """Go's %q (strconv.Quote)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def go_time(moment):
    """time.Time as Go's JSON writes it (RFC 3339, nanosecond precision, Z for UTC)."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = int(moment.utcoffset().total_seconds()) if moment.utcoffset() else 0
    if offset == 0:
        return text + "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return f"{text}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def now_utc():
    return datetime.now(timezone.utc)


def local_time(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).astimezone()


def go_time_parse(text):
    """Our own go_time() output back to a datetime."""
    text = text.replace("Z", "+00:00")
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?([+-]\d\d:\d\d)$", text)
    if not match:
        return datetime.fromisoformat(text)
    fraction = (match.group(2) or ".0")[1:7].ljust(6, "0")
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}{match.group(3)}")


DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(text):
    """Go's time.ParseDuration -> nanoseconds; ValueError with Go's message."""
    original, rest, sign = text, text, 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError("time: invalid duration " + go_quote(original))
    total = 0
    while rest:
        match = re.match(r"(\d*)(?:\.(\d*))?", rest)
        whole, fraction = match.group(1), match.group(2)
        if not whole and not fraction:
            raise ValueError("time: invalid duration " + go_quote(original))
        rest = rest[match.end() :]
        unit = re.match(r"[^0-9.]*", rest).group(0)
        if not unit:
            raise ValueError("time: missing unit in duration " + go_quote(original))
        if unit not in DURATION_UNITS:
            raise ValueError(
                "time: unknown unit " + go_quote(unit) + " in duration " + go_quote(original)
            )
        rest = rest[len(unit) :]
        scale = DURATION_UNITS[unit]
        total += int(whole or 0) * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > MAX_DURATION:
            raise ValueError("time: invalid duration " + go_quote(original))
    return sign * total


def human_bytes(size):
    """format.HumanBytes."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_number(count):
    """format.HumanNumber."""
    for unit, scale, decimals in (("B", 10**9, 1), ("M", 10**6, 2)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{decimals}f}{unit}"
    return f"{count / 1000:.0f}K" if count >= 1000 else str(count)


def human_duration(seconds):
    """format's humanDuration."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_time(moment, zero="Never"):
    """format.HumanTime."""
    if moment is None:
        return zero
    delta = (now_utc() - moment).total_seconds()
    if int(delta / 3600) // 24 // 365 < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


# ---------------------------------------------------------------------------- names


MISSING = "!MISSING!"


class Name:
    """types/model.Name: host/namespace/model:tag, defaults filled in as ParseName does."""

    __slots__ = ("host", "model", "namespace", "tag")

    def __init__(self, host, namespace, model, tag):
        self.host, self.namespace, self.model, self.tag = host, namespace, model, tag

    @classmethod
    def parse(cls, text):
        host = namespace = tag = ""
        text = text if isinstance(text, str) else ""
        if text.rfind(":") > text.rfind("/"):
            text, tag = _cut_promised(text, ":")
        rest, model, promised = _cut_last(text, "/")
        if not promised:
            model = text
        else:
            rest2, namespace, promised = _cut_last(rest, "/")
            if not promised:
                namespace = rest
            else:
                scheme, sep, after = rest2.partition("://")
                host = after if sep else scheme
        return cls(host or REGISTRY, namespace or "library", model, tag or "latest")

    @classmethod
    def from_parts(cls, parts):
        name = cls(*parts) if len(parts) == 4 else cls("", "", "", "")
        return name if name.valid() else None

    def valid(self):
        return all(
            _valid_part(kind, part)
            for kind, part in zip(
                ("host", "namespace", "model", "tag"),
                (self.host, self.namespace, self.model, self.tag),
            )
        )

    def parts(self):
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self):
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def short(self):
        """DisplayShortest."""
        if self.host.lower() != REGISTRY:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != "library":
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def __eq__(self, other):
        return isinstance(other, Name) and self.parts() == other.parts()

    def __hash__(self):
        return hash(self.parts())


def _cut_last(text, sep):
    index = text.rfind(sep)
    if index < 0:
        return text, "", False
    before, after = text[:index], text[index + len(sep) :]
    return before or MISSING, after or MISSING, True


def _cut_promised(text, sep):
    before, after, _ = _cut_last(text, sep)
    return before, after


def _valid_part(kind, part):
    limit = 350 if kind == "host" else 80
    if not 1 <= len(part) <= limit:
        return False
    for i, char in enumerate(part):
        word = char.isascii() and (char.isalnum() or char == "_")
        if i == 0:
            if not word:
                return False
        elif char == ".":
            if kind == "namespace":
                return False
        elif char == ":":
            if kind != "host":
                return False
        elif char != "-" and not word:
            return False
    return True


# ---------------------------------------------------------------------------- GGUF


GGUF_UINT32, GGUF_FLOAT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_UINT64 = 4, 6, 7, 8, 9, 10
GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
# ggml file types, as config.file_type and details.quantization_level name them
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 7: "Q8_0", 14: "Q4_K_S", 15: "Q4_K_M", 38: "MXFP4"}


def gguf_bytes(values):
    """A GGUF v3 file with metadata only: [(key, type, value)], no tensors."""

    def string(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = [b"GGUF", struct.pack("<IQQ", 3, 0, len(values))]
    for key, kind, value in values:
        out.append(string(key) + struct.pack("<I", kind))
        out.append(string(value) if kind == GGUF_STRING else struct.pack(GGUF_SCALARS[kind], value))
    return b"".join(out)


def gguf_metadata(path):
    """The key/values of a GGUF file; ValueError when it is not one."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    if data[:4] != b"GGUF":
        raise ValueError("invalid file magic")
    offset = 24
    version, _, count = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise ValueError(f"unsupported version {version}")

    def read(kind):
        nonlocal offset
        if kind == GGUF_STRING:
            (length,) = struct.unpack_from("<Q", data, offset)
            offset += 8 + length
            return data[offset - length : offset].decode(errors="replace")
        if kind == GGUF_ARRAY:
            item, length = struct.unpack_from("<IQ", data, offset)
            offset += 12
            return [read(item) for _ in range(length)]
        fmt = GGUF_SCALARS[kind]
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    values = {}
    try:
        for _ in range(count):
            key = read(GGUF_STRING)
            (kind,) = struct.unpack_from("<I", data, offset)
            offset += 4
            values[key] = read(kind)
    except (struct.error, KeyError) as e:
        raise ValueError(f"invalid GGUF metadata: {e}") from None
    return values


def gguf_key(values, key):
    """gguf.File.KeyValue: keys outside general./tokenizer. are the architecture's."""
    if not key.startswith(("general.", "tokenizer.")):
        key = f"{values.get('general.architecture', '')}.{key}"
    return values.get(key)


# ---------------------------------------------------------------------------- the registry

LLAMA_TEMPLATE = """<|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
{{ if .System }}{{ .System }}
{{- end }}
{{- if .Tools }}When you receive a tool call response, use the output to format an answer to the \
original user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}\
{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

STARCODER_TEMPLATE = """{{- if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}\
<fim_middle>{{- else }}{{ .Prompt }}{{- end }}"""

QWEN3_TEMPLATE = """{{- $lastUserIdx := -1 -}}
{{- range $idx, $msg := .Messages -}}
{{- if eq $msg.Role "user" }}{{ $lastUserIdx = $idx }}{{ end -}}
{{- end }}
{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}
{{ end }}
{{- if .Tools }}# Tools

You may call one or more functions to assist with the user query.

<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>
{{- end -}}
<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if (and $.IsThinkSet (and .Thinking (or $last (gt $i $lastUserIdx)))) -}}
<think>{{ .Thinking }}</think>
{{ end -}}
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{- range .ToolCalls }}
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}
</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) -}}
<think>

</think>

{{ end -}}
{{ end }}
{{- end }}"""

GPT_OSS_TEMPLATE = """<|start|>system<|message|>You are ChatGPT, a large language model trained by \
OpenAI.
Knowledge cutoff: 2024-06
Reasoning: {{ if .ThinkLevel }}{{ .ThinkLevel }}{{ else }}medium{{ end }}
# Valid channels: analysis, commentary, final.<|end|>
{{- if .Tools }}<|start|>developer<|message|># Tools
{{- range .Tools }}
type {{ .Function.Name }} = (_: {{ .Function.Parameters }}) => any;
{{- end }}<|end|>
{{- end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|start|>user<|message|>{{ .Content }}<|end|>
{{- else if eq .Role "assistant" }}<|start|>assistant<|channel|>final<|message|>{{ .Content }}\
<|end|>
{{- else if eq .Role "tool" }}<|start|>functions.{{ .ToolName }} to=assistant<|channel|>commentary\
<|message|>{{ .Content }}<|end|>
{{- end }}
{{- end }}<|start|>assistant"""

# The models "registry.ollama.ai" has here: the GGUF metadata of each model file, its
# layers, and the tags that name it.
CATALOGUE = {
    "library/llama3.2:3b": {
        "tags": ["library/llama3.2:latest"],
        "gguf": [
            ("general.architecture", GGUF_STRING, "llama"),
            ("general.name", GGUF_STRING, "Llama 3.2 3B Instruct"),
            ("general.parameter_count", GGUF_UINT64, 3212749888),
            ("general.file_type", GGUF_UINT32, 15),
            ("general.quantization_version", GGUF_UINT32, 2),
            ("llama.block_count", GGUF_UINT32, 28),
            ("llama.context_length", GGUF_UINT32, 131072),
            ("llama.embedding_length", GGUF_UINT32, 3072),
            ("llama.attention.head_count", GGUF_UINT32, 24),
            ("llama.attention.head_count_kv", GGUF_UINT32, 8),
            ("llama.rope.freq_base", GGUF_FLOAT32, 500000.0),
            ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ],
        "template": LLAMA_TEMPLATE,
        "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT (text shortened for tests)",
        "params": {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
    },
    "library/starcoder2:3b": {
        "tags": [],
        "gguf": [
            ("general.architecture", GGUF_STRING, "starcoder2"),
            ("general.name", GGUF_STRING, "starcoder2-3b"),
            ("general.parameter_count", GGUF_UINT64, 3030371328),
            ("general.file_type", GGUF_UINT32, 2),
            ("starcoder2.block_count", GGUF_UINT32, 30),
            ("starcoder2.context_length", GGUF_UINT32, 16384),
            ("starcoder2.embedding_length", GGUF_UINT32, 3072),
            ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ],
        "template": STARCODER_TEMPLATE,
        "license": "BigCode Open RAIL-M v1 (text shortened for tests)",
        "params": None,
    },
    "library/nomic-embed-text:v1.5": {
        "tags": ["library/nomic-embed-text:latest"],
        "gguf": [
            ("general.architecture", GGUF_STRING, "nomic-bert"),
            ("general.name", GGUF_STRING, "nomic-embed-text-v1.5"),
            ("general.parameter_count", GGUF_UINT64, 136727040),
            ("general.file_type", GGUF_UINT32, 1),
            ("nomic-bert.block_count", GGUF_UINT32, 12),
            ("nomic-bert.context_length", GGUF_UINT32, 2048),
            ("nomic-bert.embedding_length", GGUF_UINT32, 768),
            ("nomic-bert.pooling_type", GGUF_UINT32, 1),
            ("tokenizer.ggml.model", GGUF_STRING, "bert"),
        ],
        "template": None,
        "license": "Apache License 2.0 (text shortened for tests)",
        "params": {"num_ctx": 8192},
    },
    "library/gpt-oss:20b": {
        "tags": ["library/gpt-oss:latest"],
        "gguf": [
            ("general.architecture", GGUF_STRING, "gptoss"),
            ("general.name", GGUF_STRING, "Gpt Oss 20b"),
            ("general.parameter_count", GGUF_UINT64, 20914757184),
            ("general.file_type", GGUF_UINT32, 38),
            ("gptoss.block_count", GGUF_UINT32, 24),
            ("gptoss.context_length", GGUF_UINT32, 131072),
            ("gptoss.embedding_length", GGUF_UINT32, 2880),
            ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ],
        "template": GPT_OSS_TEMPLATE,
        "license": "Apache License 2.0 (text shortened for tests)",
        "params": {"temperature": 1},
    },
    "library/qwen3:0.6b": {
        "tags": [],
        "gguf": [
            ("general.architecture", GGUF_STRING, "qwen3"),
            ("general.name", GGUF_STRING, "Qwen3 0.6B"),
            ("general.parameter_count", GGUF_UINT64, 751632384),
            ("general.file_type", GGUF_UINT32, 15),
            ("qwen3.block_count", GGUF_UINT32, 28),
            ("qwen3.context_length", GGUF_UINT32, 40960),
            ("qwen3.embedding_length", GGUF_UINT32, 1024),
            ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ],
        "template": QWEN3_TEMPLATE,
        "license": "Apache License 2.0 (text shortened for tests)",
        "params": {
            "repeat_penalty": 1,
            "stop": ["<|im_start|>", "<|im_end|>"],
            "temperature": 0.6,
            "top_k": 20,
            "top_p": 0.95,
        },
    },
}

_registry_lock = threading.Lock()
_registry = {}


def registry_model(name):
    """(manifest bytes, {digest: blob bytes}) the registry serves for `name`, or None."""
    if name.host != REGISTRY:
        return None
    key = f"{name.namespace}/{name.model}:{name.tag}"
    for canonical, spec in CATALOGUE.items():
        if key == canonical or key in spec["tags"]:
            with _registry_lock:
                if canonical not in _registry:
                    _registry[canonical] = build_registry_model(spec)
                return _registry[canonical]
    return None


def build_registry_model(spec):
    blobs = {}

    def layer(media_type, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    values = dict((k, v) for k, _, v in spec["gguf"])
    layers = [layer("application/vnd.ollama.image.model", gguf_bytes(spec["gguf"]))]
    if spec["template"]:
        layers.append(layer("application/vnd.ollama.image.template", spec["template"].encode()))
    layers.append(layer("application/vnd.ollama.image.license", spec["license"].encode()))
    if spec["params"]:
        layers.append(
            layer("application/vnd.ollama.image.params", go_json(spec["params"]).encode())
        )
    family = values["general.architecture"]
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": human_number(values["general.parameter_count"]),
        "file_type": FILE_TYPES[values["general.file_type"]],
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [item["digest"] for item in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": layer("application/vnd.docker.container.image.v1+json", go_json(config).encode()),
        "layers": layers,
    }
    return go_json(manifest).encode(), blobs


# ---------------------------------------------------------------------------- the store

DIGEST_RE = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")


def log(level, message, **fields):
    extra = "".join(f" {k}={go_quote(str(v)) if ' ' in str(v) else v}" for k, v in fields.items())
    sys.stderr.write(f"time={go_time(now_utc())} level={level} msg={go_quote(message)}{extra}\n")


class Manifest:
    def __init__(self, name, path, raw):
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("json: cannot unmarshal into Go value of type server.Manifest")
        self.name = name
        self.path = path
        self.config = data.get("config") or {}
        self.layers = data.get("layers") or []
        self.digest = hashlib.sha256(raw).hexdigest()
        self.modified = local_time(path.stat().st_mtime)

    def size(self):
        return sum(int(layer.get("size", 0)) for layer in [*self.layers, self.config])

    def digests(self):
        return [
            d
            for d in [*(layer.get("digest") for layer in self.layers), self.config.get("digest")]
            if d
        ]


class Model:
    """What server.GetModel reads from a manifest and its blobs."""

    def __init__(self, name, manifest):
        self.name = name
        self.manifest = manifest
        self.config = {}
        self.model_path = None
        self.parent = ""
        self.template = DEFAULT_TEMPLATE
        self.system = ""
        self.license = []
        self.options = {}
        self.messages = []

    @property
    def short(self):
        return self.name.short()

    @property
    def family(self):
        return self.config.get("model_family", "")

    def details(self, parent=True):
        return {
            "parent_model": self.parent if parent else "",
            "format": self.config.get("model_format", ""),
            "family": self.family,
            "families": self.config.get("model_families"),
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }

    def metadata(self):
        """The GGUF metadata of the model file; OSError or ValueError when unreadable."""
        if not self.model_path:
            raise FileNotFoundError("no model file")
        return gguf_metadata(self.model_path)

    def capabilities(self):
        """server.Model.Capabilities."""
        caps = []
        if self.model_path:
            try:
                values = self.metadata()
            except (OSError, ValueError) as e:
                log("ERROR", "couldn't open model file", error=e)
            else:
                caps.append(
                    "embedding" if gguf_key(values, "pooling_type") is not None else "completion"
                )
                if gguf_key(values, "vision.block_count") is not None:
                    caps.append("vision")
        elif self.config.get("capabilities"):
            caps.extend(self.config["capabilities"])
        names = template_vars(self.template)
        if "tools" in names:
            caps.append("tools")
        if "suffix" in names:
            caps.append("insert")
        if "thinking" not in caps and (
            thinking_tags(self.template) or self.family in ("gptoss", "gpt-oss")
        ):
            caps.append("thinking")
        return caps

    def check_capabilities(self, wanted):
        """server.Model.CheckCapabilities, wrapped as scheduleRunner wraps it."""
        have = self.capabilities()
        missing = [cap for cap in wanted if cap not in have]
        if not missing:
            return None
        message = f"{self.name} does not support " + "\n".join(missing)
        if "thinking" in missing and (self.family == "qwen3" or self.name.model == "deepseek-r1"):
            message += ". Pull the model again to get the latest version with full thinking support"
        return missing, message


def template_vars(template):
    """template.Vars: every identifier the template's actions use, lower-cased."""
    names = set()
    for action in re.findall(r"\{\{(.*?)\}\}", template, re.S):
        names.update(n.lower() for n in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", action))
    return names


def thinking_tags(template):
    """thinking.InferTags, as a pattern: `<tag>{{ .Thinking }}</tag>`."""
    found = re.search(r"(<[^<>{}\s]+>)\s*\{\{-?\s*\.Thinking\s*-?\}\}\s*(</[^<>{}\s]+>)", template)
    return found.groups() if found else None


class Store:
    """Ollama's models directory: manifests/<host>/<ns>/<model>/<tag> and blobs/sha256-<hex>."""

    def __init__(self, root):
        self.root = Path(root)
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        self.lock = threading.RLock()

    def blob_path(self, digest):
        """GetBlobsPath; ValueError for a malformed digest."""
        if not DIGEST_RE.match(digest or ""):
            raise ValueError("invalid digest format")
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        return self.blobs_dir / digest.replace(":", "-")

    def manifest_path(self, name):
        return self.manifests_dir.joinpath(*name.parts())

    def manifests(self, strict=False):
        """server.Manifests: every readable manifest by name; bad ones skipped and logged."""
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        found = {}
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if path.is_dir():
                continue
            name = Name.from_parts(path.relative_to(self.manifests_dir).parts)
            try:
                if name is None:
                    raise ValueError("bad manifest name")
                found[name] = Manifest(name, path, path.read_bytes())
            except (OSError, ValueError) as e:
                if strict:
                    raise
                log("WARN", "bad manifest", name=path, error=e)
        return found

    def manifest(self, name):
        """ParseNamedManifest; FileNotFoundError when there is none."""
        return Manifest(name, self.manifest_path(name), self.manifest_path(name).read_bytes())

    def existing_name(self, name):
        """getExistingName: each part replaced by the spelling of a stored model's."""
        parts = list(name.parts())
        for other in self.manifests():
            for i, part in enumerate(other.parts()):
                if part.lower() == parts[i].lower():
                    parts[i] = part
        return Name(*parts)

    def model(self, text):
        """server.GetModel(text); FileNotFoundError when the manifest or a blob is missing."""
        name = Name.parse(text)
        if not name.valid():
            raise FileNotFoundError(text)
        manifest = self.manifest(name)
        model = Model(name, manifest)
        if manifest.config.get("digest"):
            model.config = json.loads(self.blob_path(manifest.config["digest"]).read_bytes())
        for layer in manifest.layers:
            path = self.blob_path(layer.get("digest", ""))
            kind = layer.get("mediaType", "")
            if kind == "application/vnd.ollama.image.model":
                model.model_path = path
                model.parent = layer.get("from", "")
            elif kind in (
                "application/vnd.ollama.image.prompt",
                "application/vnd.ollama.image.template",
            ):
                model.template = path.read_text()
            elif kind == "application/vnd.ollama.image.system":
                model.system = path.read_text()
            elif kind == "application/vnd.ollama.image.params":
                model.options = json.loads(path.read_bytes()) or {}
            elif kind == "application/vnd.ollama.image.messages":
                model.messages = json.loads(path.read_bytes()) or []
            elif kind == "application/vnd.ollama.image.license":
                model.license.append(path.read_text())
        return model

    def write_blob(self, data):
        """NewLayer: the blob for `data` -> (digest, size, "using existing layer"/...)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if path.exists():
            return digest, len(data), "using existing layer"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        tmp.replace(path)
        return digest, len(data), "creating new layer"

    def write_manifest(self, name, raw):
        path = self.manifest_path(name)
        with self.lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(raw)
            tmp.replace(path)

    def used_digests(self):
        return {d for m in self.manifests().values() for d in m.digests()}

    def remove(self, manifest):
        """Manifest.Remove and RemoveLayers: the manifest, then the blobs no one else uses."""
        with self.lock:
            manifest.path.unlink()
            self.prune_directories(self.manifests_dir)
            used = self.used_digests()
            for digest in manifest.digests():
                if digest not in used:
                    with contextlib.suppress(OSError, ValueError):
                        self.blob_path(digest).unlink()

    def prune_directories(self, path):
        """PruneDirectory: empty directories below (and including) `path` go."""
        if not path.is_dir() or path.is_symlink():
            return
        for child in path.iterdir():
            self.prune_directories(child)
        if not any(path.iterdir()):
            path.rmdir()

    def startup(self, prune):
        """What Serve does first: fixBlobs, then (unless OLLAMA_NOPRUNE) prune unused blobs."""
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        for path in self.blobs_dir.rglob("sha256:*"):
            path.rename(path.with_name(path.name.replace(":", "-", 1)))
        if not prune:
            return
        try:
            self.manifests(strict=True)
        except (OSError, ValueError) as e:
            log(
                "WARN",
                "corrupt manifests detected, skipping prune operation.  Re-pull or delete to clear",
                error=e,
            )
            return
        used = self.used_digests()
        removed = 0
        for path in self.blobs_dir.iterdir():
            digest = path.name.replace("-", ":", 1)
            if not DIGEST_RE.match(digest) or digest not in used:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        log("INFO", f"total unused blobs removed: {removed}")
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self.prune_directories(self.manifests_dir)


# ---------------------------------------------------------------------------- request bodies


class Struct:
    """A Go struct a request body is decoded into: JSON key -> Go type, in field order."""

    def __init__(self, name, fields, go_name=None):
        self.name = name
        self.go_name = go_name or name
        self.fields = fields


def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class _Decoder:
    """encoding/json's Unmarshal checks, as far as request bodies need them: the first type
    mismatch is reported after decoding, a custom unmarshaler's error at once."""

    def __init__(self):
        self.first = None

    def mismatch(self, value, go_type, struct, path):
        if self.first is None:
            kind = _json_kind(value)
            if kind == "number" and go_type == "int":
                kind = f"number {value}"
            where = f"Go struct field {struct}.{path}" if struct else "Go value"
            self.first = f"json: cannot unmarshal {kind} into {where} of type {go_type}"

    def check(self, value, go_type, struct, path):
        """Returns the decoded value (None for JSON null)."""
        if value is None:
            return None
        if callable(go_type):
            return go_type(value)
        if isinstance(go_type, Struct):
            if not isinstance(value, dict):
                self.mismatch(value, go_type.go_name, struct, path)
                return None
            return self.struct(value, go_type, path)
        if isinstance(go_type, tuple):  # ("[]", element type, Go name) or ("map", ...)
            shape, element, name = go_type
            if shape == "[]":
                if not isinstance(value, list):
                    self.mismatch(value, name, struct, path)
                    return None
                items = [self.check(v, element, struct, path) for v in value]
                # a null element is the element type's zero value
                zero = {"string": "", "int": 0, "bool": False}.get(element, {})
                return [zero if item is None else item for item in items]
            if not isinstance(value, dict):
                self.mismatch(value, name, struct, path)
                return None
            return {k: self.check(v, element, struct, path) for k, v in value.items()}
        ok = {
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": _json_kind(value) == "number" and float(value).is_integer(),
            "float": _json_kind(value) == "number",
            "any": True,
        }[go_type if go_type in ("string", "bool", "int", "any") else "float"]
        if not ok:
            self.mismatch(value, go_type, struct, path)
            return None
        return int(value) if go_type == "int" else value

    def struct(self, body, shape, path=""):
        """Keys matched to fields as Go does (exact first, then case-insensitively)."""
        by_lower = {key.lower(): key for key in shape.fields}
        decoded = {}
        for key, value in body.items():
            field = key if key in shape.fields else by_lower.get(key.lower())
            if field is None:
                continue
            where = f"{path}.{field}" if path else field
            decoded[field] = self.check(value, shape.fields[field], shape.name, where)
        return {k: v for k, v in decoded.items() if v is not None}


def decode_body(raw, shape, empty="missing request body"):
    """c.ShouldBindJSON(&req) for `shape`; ApiError(400) with Go's message. An empty body is
    io.EOF: the native handlers say `empty`, the /v1 middleware passes on "EOF"."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise ApiError(400, empty)
    try:
        value, _ = json.JSONDecoder(parse_constant=_no_constant).raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise ApiError(400, _syntax_error(text, e)) from None
    decoder = _Decoder()
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type {shape.go_name}"
        )
    decoded = decoder.struct(value, shape)
    if decoder.first:
        raise ApiError(400, decoder.first)
    return decoded


def _no_constant(name):
    raise json.JSONDecodeError("Expecting value", name, 0)


def _syntax_error(text, error):
    """encoding/json's syntax error texts, for the mistakes people make."""
    if error.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[error.pos]
    shown = "'\\''" if char == "'" else f"'{char}'" if char.isprintable() else go_quote(char)
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {shown} looking for beginning of object key string"
    if error.msg.startswith("Expecting ':'"):
        return f"invalid character {shown} after object key"
    if error.msg.startswith("Expecting ','"):
        opener = _innermost_opener(text, error.pos)
        after = "array element" if opener == "[" else "object key:value pair"
        return f"invalid character {shown} after {after}"
    if error.msg.startswith("Invalid control character"):
        return f"invalid character {shown} in string literal"
    return f"invalid character {shown} looking for beginning of value"


def _innermost_opener(text, end):
    stack, in_string, escaped = [], False, False
    for char in text[:end]:
        if in_string:
            escaped = char == "\\" and not escaped
            in_string = escaped or char != '"'
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def duration_field(value):
    """api.Duration.UnmarshalJSON -> nanoseconds ("forever" for negatives)."""
    if isinstance(value, bool):
        raise ApiError(400, "Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        return MAX_DURATION if value < 0 else min(int(value * 1e9), MAX_DURATION)
    if isinstance(value, str):
        try:
            nanoseconds = parse_duration(value)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return MAX_DURATION if nanoseconds < 0 else nanoseconds
    kind = "map[string]interface {}" if isinstance(value, dict) else "[]interface {}"
    raise ApiError(400, f"Unsupported type: '{kind}'")


def think_field(value):
    """api.ThinkValue.UnmarshalJSON."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in ("high", "medium", "low"):
            raise ApiError(
                400,
                f'invalid think value: {go_quote(value)} (must be "high", "medium", "low", '
                "true, or false)",
            )
        return value
    raise ApiError(400, 'think must be a boolean or string ("high", "medium", "low")')


def raw_field(value):
    """json.RawMessage: kept as the JSON text Go would see."""
    return json.dumps(value, separators=(",", ":"))


def image_field(value):
    """api.ImageData ([]byte): base64 in JSON."""
    if not isinstance(value, str):
        raise ApiError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type []uint8"
        )
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ApiError(400, "illegal base64 data at input byte 0") from None


ANY_MAP = ("map", "any", "map[string]interface {}")
TOOL_CALL = Struct(
    "ToolCall",
    {
        "function": Struct(
            "ToolCallFunction",
            {"index": "int", "name": "string", "arguments": ANY_MAP},
            "api.ToolCallFunction",
        )
    },
    "api.ToolCall",
)


def message_field(value):
    """api.Message has its own UnmarshalJSON (through `type Alias Message`); roles lower-cased."""
    decoder = _Decoder()
    if not isinstance(value, dict):
        raise ApiError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type api.Alias"
        )
    decoded = decoder.struct(value, MESSAGE)
    if decoder.first:
        raise ApiError(400, decoder.first)
    decoded["role"] = decoded.get("role", "").lower()
    return decoded


MESSAGE = Struct(
    "Alias",
    {
        "role": "string",
        "content": "string",
        "thinking": "string",
        "images": ("[]", image_field, "[]api.ImageData"),
        "tool_calls": ("[]", TOOL_CALL, "[]api.ToolCall"),
        "tool_name": "string",
    },
    "api.Alias",
)
TOOL = Struct(
    "Tool",
    {
        "type": "string",
        "items": "any",
        "function": Struct(
            "ToolFunction",
            {"name": "string", "description": "string", "parameters": "any"},
            "api.ToolFunction",
        ),
    },
    "api.Tool",
)
TOOLS = ("[]", TOOL, "api.Tools")
MESSAGES = ("[]", message_field, "[]api.Message")

CHAT_REQUEST = Struct(
    "ChatRequest",
    {
        "model": "string",
        "messages": MESSAGES,
        "stream": "bool",
        "format": raw_field,
        "keep_alive": duration_field,
        "tools": TOOLS,
        "options": ANY_MAP,
        "think": think_field,
        "_debug_render_only": "bool",
    },
    "api.ChatRequest",
)
GENERATE_REQUEST = Struct(
    "GenerateRequest",
    {
        "model": "string",
        "prompt": "string",
        "suffix": "string",
        "system": "string",
        "template": "string",
        "context": ("[]", "int", "[]int"),
        "stream": "bool",
        "raw": "bool",
        "format": raw_field,
        "keep_alive": duration_field,
        "images": ("[]", image_field, "[]api.ImageData"),
        "options": ANY_MAP,
        "think": think_field,
        "_debug_render_only": "bool",
    },
    "api.GenerateRequest",
)
EMBED_REQUEST = Struct(
    "EmbedRequest",
    {
        "model": "string",
        "input": "any",
        "keep_alive": duration_field,
        "truncate": "bool",
        "dimensions": "int",
        "options": ANY_MAP,
    },
    "api.EmbedRequest",
)
EMBEDDING_REQUEST = Struct(
    "EmbeddingRequest",
    {"model": "string", "prompt": "string", "keep_alive": duration_field, "options": ANY_MAP},
    "api.EmbeddingRequest",
)
PULL_REQUEST = Struct(
    "PullRequest",
    {
        "model": "string",
        "insecure": "bool",
        "username": "string",
        "password": "string",
        "stream": "bool",
        "name": "string",
    },
    "api.PullRequest",
)
DELETE_REQUEST = Struct("DeleteRequest", {"model": "string", "name": "string"}, "api.DeleteRequest")
SHOW_REQUEST = Struct(
    "ShowRequest",
    {
        "model": "string",
        "system": "string",
        "template": "string",
        "verbose": "bool",
        "options": ANY_MAP,
        "name": "string",
    },
    "api.ShowRequest",
)
COPY_REQUEST = Struct(
    "CopyRequest", {"source": "string", "destination": "string"}, "api.CopyRequest"
)
CREATE_REQUEST = Struct(
    "CreateRequest",
    {
        "model": "string",
        "stream": "bool",
        "quantize": "string",
        "from": "string",
        "remote_host": "string",
        "files": ("map", "string", "map[string]string"),
        "adapters": ("map", "string", "map[string]string"),
        "template": "string",
        "license": "any",
        "system": "string",
        "parameters": ANY_MAP,
        "messages": MESSAGES,
        "renderer": "string",
        "parser": "string",
        "info": ANY_MAP,
        "name": "string",
        "quantization": "string",
    },
    "api.CreateRequest",
)

OPENAI_MESSAGE = Struct(
    "Message",
    {
        "role": "string",
        "content": "any",
        "reasoning": "string",
        "tool_calls": (
            "[]",
            Struct(
                "ToolCall",
                {
                    "id": "string",
                    "index": "int",
                    "type": "string",
                    "function": Struct(
                        "",
                        {"name": "string", "arguments": "string"},
                        "struct { Name string "
                        '"json:\\"name\\""; Arguments string "json:\\"arguments\\"" }',
                    ),
                },
                "openai.ToolCall",
            ),
            "[]openai.ToolCall",
        ),
        "name": "string",
        "tool_call_id": "string",
    },
    "openai.Message",
)
STREAM_OPTIONS = Struct("StreamOptions", {"include_usage": "bool"}, "openai.StreamOptions")
OPENAI_CHAT_REQUEST = Struct(
    "ChatCompletionRequest",
    {
        "model": "string",
        "messages": ("[]", OPENAI_MESSAGE, "[]openai.Message"),
        "stream": "bool",
        "stream_options": STREAM_OPTIONS,
        "max_tokens": "int",
        "seed": "int",
        "stop": "any",
        "temperature": "float64",
        "frequency_penalty": "float64",
        "presence_penalty": "float64",
        "top_p": "float64",
        "response_format": Struct(
            "ResponseFormat",
            {
                "type": "string",
                "json_schema": Struct("JsonSchema", {"schema": raw_field}, "openai.JsonSchema"),
            },
            "openai.ResponseFormat",
        ),
        "tools": ("[]", TOOL, "[]api.Tool"),
        "reasoning": Struct("Reasoning", {"effort": "string"}, "openai.Reasoning"),
        "reasoning_effort": "string",
        "_debug_render_only": "bool",
    },
    "openai.ChatCompletionRequest",
)
OPENAI_COMPLETION_REQUEST = Struct(
    "CompletionRequest",
    {
        "model": "string",
        "prompt": "string",
        "frequency_penalty": "float32",
        "max_tokens": "int",
        "presence_penalty": "float32",
        "seed": "int",
        "stop": "any",
        "stream": "bool",
        "stream_options": STREAM_OPTIONS,
        "temperature": "float32",
        "top_p": "float32",
        "suffix": "string",
        "_debug_render_only": "bool",
    },
    "openai.CompletionRequest",
)
OPENAI_EMBED_REQUEST = Struct(
    "EmbedRequest", {"input": "any", "model": "string", "dimensions": "int"}, "openai.EmbedRequest"
)

# api.Options: every option a request (or a model's params layer) may set, by Go kind.
OPTION_KINDS = {
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "use_mmap": "bool",
    "num_thread": "int",
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float32",
    "min_p": "float32",
    "typical_p": "float32",
    "repeat_last_n": "int",
    "temperature": "float32",
    "repeat_penalty": "float32",
    "presence_penalty": "float32",
    "frequency_penalty": "float32",
    "stop": "array",
}


def model_options(model, requested):
    """modelOptions: the model's params, then the request's; Go's FromMap errors."""
    options = {"num_predict": -1, "num_ctx": int(os.environ.get("OLLAMA_CONTEXT_LENGTH") or 4096)}
    for source in (model.options, requested or {}):
        for key, value in source.items():
            kind = OPTION_KINDS.get(key)
            if kind is None or value is None:
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind == "int" and not number:
                raise ApiError(500, f'option "{key}" must be of type integer')
            if kind == "bool" and not isinstance(value, bool):
                raise ApiError(500, f'option "{key}" must be of type boolean')
            if kind == "float32" and not number:
                raise ApiError(500, f'option "{key}" must be of type float32')
            if kind == "array":
                if not isinstance(value, list):
                    raise ApiError(500, f'option "{key}" must be of type array')
                if not all(isinstance(v, str) for v in value):
                    raise ApiError(500, f'option "{key}" must be of an array of strings')
            options[key] = int(value) if kind == "int" else value
    return options


# ---------------------------------------------------------------------------- answers

TOOL_REQUEST = re.compile(r"call ([A-Za-z_][A-Za-z0-9_]*) with (\{.*\})", re.S)


def words(text):
    """The chunks a stream sends: 'Echo: a  b' -> ['Echo:', ' a', ' b']."""
    return re.findall(r"\s*\S+", " ".join(text.split()))


def count_tokens(text):
    return max(1, len(text.split())) if text else 0


def embedding(text, dims):
    """A unit vector derived from the text: equal texts give equal vectors."""
    values = []
    seed = text.encode()
    while len(values) < dims:
        seed = hashlib.sha256(seed).digest()
        values.extend(b / 127.5 - 1.0 for b in seed)
    return normalize(values[:dims])


def normalize(values):
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def schema_instance(schema, text, defs=None, depth=0):
    """A value valid for a JSON schema (the subset people write): strings are `text`."""
    if not isinstance(schema, dict) or depth > 20:
        return text
    defs = (
        defs if defs is not None else {**schema.get("definitions", {}), **schema.get("$defs", {})}
    )
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        return schema_instance(defs.get(ref.rsplit("/", 1)[-1], {}), text, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], text, defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {k: schema_instance(v, text, defs, depth + 1) for k, v in properties.items()}
    if kind == "array":
        count = schema.get("minItems", 1) if isinstance(schema.get("minItems"), int) else 1
        return [schema_instance(schema.get("items", {}), text, defs, depth + 1)] * count
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        return int(low) if kind == "integer" else low
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def format_text(fmt, text):
    """What a model constrained to `format` writes; Completion's error for a bad format."""
    if fmt in (None, "null", '""'):
        return None
    if fmt == '"json"':
        return json.dumps({"echo": text})
    if not fmt.startswith("{"):
        raise ApiError(
            500, f'invalid format: {go_quote(fmt)}; expected "json" or a valid JSON Schema object'
        )
    return json.dumps(schema_instance(json.loads(fmt), text))


class Script:
    """The scripted model's answer: [(kind, value)] pieces, kind thinking/content/tool_calls."""

    def __init__(self, pieces, options):
        self.reason = "stop"
        stop = [s for s in options.get("stop") or [] if s]
        text = "".join(v for k, v in pieces if k == "content")
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            pieces = [p for p in pieces if p[0] != "content"] + [
                ("content", w) for w in words(text)
            ]
        limit = options.get("num_predict", -1)
        if isinstance(limit, int) and 0 < limit <= len(pieces):
            pieces, self.reason = pieces[:limit], "length"
        self.pieces = pieces

    def joined(self, kind):
        return "".join(v for k, v in self.pieces if k == kind)

    def tool_calls(self):
        return [call for k, v in self.pieces if k == "tool_calls" for call in v]


def last_user_text(messages):
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def chat_script(request, options, thinks):
    messages = request.get("messages", [])
    last = messages[-1] if messages else {}
    asked = last_user_text(messages)
    pieces = []
    if thinks:
        pieces += [("thinking", w) for w in words("thinking about: " + asked)]
    offered = {t.get("function", {}).get("name") for t in request.get("tools", [])}
    wanted = TOOL_REQUEST.search(last.get("content", "")) if last.get("role") == "user" else None
    arguments = None
    if wanted and wanted.group(1) in offered:
        with contextlib.suppress(ValueError):
            arguments = json.loads(wanted.group(2))
    if isinstance(arguments, dict):
        pieces.append(
            ("tool_calls", [{"function": {"name": wanted.group(1), "arguments": arguments}}])
        )
    elif last.get("role") == "tool":
        pieces += [("content", w) for w in words("tool said: " + last.get("content", ""))]
    else:
        text = format_text(request.get("format"), asked)
        pieces += [("content", w) for w in words(text if text is not None else "Echo: " + asked)]
    return Script(pieces, options)


def generate_script(request, options, thinks):
    prompt = request.get("prompt", "")
    pieces = []
    if thinks:
        pieces += [("thinking", w) for w in words("thinking about: " + prompt)]
    text = format_text(request.get("format"), prompt)
    pieces += [("content", w) for w in words(text if text is not None else "Echo: " + prompt)]
    return Script(pieces, options)


# ---------------------------------------------------------------------------- API handlers


class Answer:
    """A one-object reply (c.JSON)."""

    def __init__(self, obj, status=200):
        self.obj, self.status = obj, status


class Stream:
    """A 200 reply streamed as NDJSON (streamResponse): dicts, {"error": ...} for failures."""

    def __init__(self, items, generation=False):
        self.items, self.generation = items, generation


class Empty:
    """A reply with a status and no body (c.Status, or a handler that writes nothing)."""

    def __init__(self, status=200):
        self.status = status


class CapabilityError(ApiError):
    def __init__(self, missing, message):
        super().__init__(400, message)
        self.missing = missing


class Panic(Exception):
    """A nil dereference in Ollama: gin's recovery answers 500 with no body."""


def guarded(items):
    """A stream's items; a failure on the way becomes the {"error": ...} line Ollama sends."""
    try:
        yield from items
    except ApiError as e:
        yield {"error": e.message}
    except (OSError, ValueError) as e:
        yield {"error": str(e)}


def wait_for_stream(items):
    """waitForStream: the last progress, or the first error (status 500 unless it says)."""
    last = {}
    for item in guarded(items):
        if "error" in item:
            status = item.get("status") if isinstance(item.get("status"), int) else 500
            raise ApiError(status, item["error"])
        last = item
    return Answer(last)


def think_bool(value):
    return value is True or value in ("high", "medium", "low")


def go_map(value):
    """A map[string]any as Go writes it: keys sorted."""
    if isinstance(value, dict):
        return {k: go_map(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [go_map(v) for v in value]
    return value


def metrics(total, prompt_tokens, eval_count):
    values = {
        "total_duration": total,
        "load_duration": total // 10,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": total // 10,
        "eval_count": eval_count,
        "eval_duration": total // 2,
    }
    return {k: v for k, v in values.items() if v}


def message_obj(role, content, thinking="", tool_calls=None):
    message = {"role": role, "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = [
            {
                "function": {
                    **({"index": c["function"]["index"]} if c["function"].get("index") else {}),
                    "name": c["function"]["name"],
                    "arguments": go_map(c["function"]["arguments"]),
                }
            }
            for c in tool_calls
        ]
    return message


class App:
    """The server's state: the store, the models loaded, the settings read at start."""

    def __init__(self, store, faults, cors, check_hosts):
        self.store = store
        self.faults = faults
        self.cors = cors
        self.check_hosts = check_hosts
        self.loaded = {}
        self.lock = threading.Lock()
        self.keep_alive = env_keep_alive()

    def schedule(self, name, caps, options, keep_alive, shown):
        """scheduleRunner with handleScheduleError's statuses: (model, options)."""
        if not name:
            raise ApiError(400, "model is required")
        try:
            model = self.store.model(name)
        except FileNotFoundError:
            raise ApiError(
                404, f"model {go_quote(shown)} not found, try pulling it first"
            ) from None
        except ValueError as e:
            raise ApiError(500, str(e)) from None
        refused = model.check_capabilities(caps)
        if refused:
            raise CapabilityError(*refused)
        opts = model_options(model, options)
        duration = self.keep_alive if keep_alive is None else keep_alive
        with self.lock:
            key = str(model.name)
            if duration <= 0:
                self.loaded.pop(key, None)
            else:
                seconds = min(duration / 1e9, 10**10)
                expires = now_utc() + timedelta(seconds=seconds)
                self.loaded[key] = (model, expires, opts["num_ctx"])
        return model, opts

    def unload(self, model):
        with self.lock:
            self.loaded.pop(str(model.name), None)

    def get_model(self, text, shown=None):
        try:
            return self.store.model(text)
        except FileNotFoundError:
            raise ApiError(404, f"model '{text if shown is None else shown}' not found") from None
        except ValueError as e:
            raise ApiError(500, str(e)) from None


def env_keep_alive():
    """envconfig.KeepAlive."""
    raw = os.environ.get("OLLAMA_KEEP_ALIVE", "").strip().strip("\"'")
    value = 5 * 60 * 10**9
    if raw:
        try:
            value = parse_duration(raw)
        except ValueError:
            with contextlib.suppress(ValueError):
                value = int(raw) * 10**9
    return MAX_DURATION if value < 0 else value


def chat(app, req):
    """ChatHandler."""
    shown = req.get("model", "")
    name = Name.parse(shown)
    if not name.valid():
        raise ApiError(400, "model is required")
    name = app.store.existing_name(name)
    model = app.get_model(shown)  # GetModel(req.Model): the name as the request spells it
    messages = req.get("messages", [])
    keep_alive = req.get("keep_alive")
    if not messages and keep_alive is not None and int(keep_alive / 1e9) == 0:
        app.unload(model)
        return Answer(chat_object(shown, message_obj("assistant", ""), done="unload"))
    think = req.get("think")
    caps = (
        ["completion"]
        + (["tools"] if req.get("tools") else [])
        + (["thinking"] if think_bool(think) else [])
    )
    try:
        model, options = app.schedule(str(name), caps, req.get("options"), keep_alive, shown)
    except CapabilityError as e:
        if "completion" in e.missing:
            raise ApiError(400, f"{go_quote(shown)} does not support chat") from None
        raise
    if not messages:
        return Answer(chat_object(shown, message_obj("assistant", ""), done="load"))
    if isinstance(think, str) and not harmony(model):
        raise ApiError(400, f"think value {go_quote(think)} is not supported for this model")
    started = time.monotonic_ns()
    tokens = sum(count_tokens(m.get("content", "")) for m in messages)
    stream = req.get("stream", True)
    try:
        script = chat_script(req, options, think_bool(think) or harmony(model))
    except ApiError as e:  # the runner refuses the format
        if stream:
            return Stream([{"error": e.message}], generation=True)
        raise

    def final(content, thinking, calls):
        total = max(1, time.monotonic_ns() - started)
        obj = chat_object(
            shown, message_obj("assistant", content, thinking, calls), done=script.reason
        )
        obj.update(metrics(total, tokens, len(script.pieces)))
        return obj

    if not stream:
        return Answer(
            final(script.joined("content"), script.joined("thinking"), script.tool_calls())
        )

    def items():
        for kind, value in script.pieces:
            if kind == "thinking":
                message = message_obj("assistant", "", thinking=value)
            elif kind == "content":
                message = message_obj("assistant", value)
            else:
                message = message_obj("assistant", "", tool_calls=value)
            yield chat_object(shown, message)
        yield final("", "", None)

    return Stream(items(), generation=True)


def harmony(model):
    """shouldUseHarmony, or a model made with `parser: harmony`."""
    if model.config.get("parser") == "harmony":
        return True
    return (
        model.family in ("gptoss", "gpt-oss")
        and "<|start|>" in model.template
        and ("<|end|>" in model.template)
    )


def chat_object(model, message, done=None):
    obj = {"model": model, "created_at": go_time(now_utc()), "message": message, "done": bool(done)}
    if done:
        obj["done_reason"] = done
    return obj


def generate_object(model, response, thinking="", done=None):
    obj = {"model": model, "created_at": go_time(now_utc()), "response": response}
    if thinking:
        obj["thinking"] = thinking
    obj["done"] = bool(done)
    if done:
        obj["done_reason"] = done
    return obj


def generate(app, req):
    """GenerateHandler."""
    shown = req.get("model", "")
    name = Name.parse(shown)
    if not name.valid():
        raise ApiError(404, f"model '{shown}' not found")
    name = app.store.existing_name(name)
    model = app.get_model(str(name), shown)
    prompt = req.get("prompt", "")
    keep_alive = req.get("keep_alive")
    if not prompt and keep_alive == 0:
        app.unload(model)
        return Answer(generate_object(shown, "", done="unload"))
    if req.get("raw") and (req.get("template") or req.get("system") or req.get("context")):
        raise ApiError(400, "raw mode does not support template, system, or context")
    think = req.get("think")
    if isinstance(think, str) and not harmony(model):
        raise ApiError(400, f"think value {go_quote(think)} is not supported for this model")
    caps = (
        ["completion"]
        + (["insert"] if req.get("suffix") else [])
        + (["thinking"] if think_bool(think) else [])
    )
    try:
        model, options = app.schedule(str(name), caps, req.get("options"), keep_alive, shown)
    except CapabilityError as e:
        if "completion" in e.missing:
            raise ApiError(400, f"{go_quote(shown)} does not support generate") from None
        raise
    if not prompt:
        return Answer(generate_object(shown, "", done="load"))
    started = time.monotonic_ns()
    stream = req.get("stream", True)
    try:
        script = generate_script(req, options, think_bool(think) or harmony(model))
    except ApiError as e:
        if stream:
            return Stream([{"error": e.message}], generation=True)
        raise

    def final(response, thinking):
        total = max(1, time.monotonic_ns() - started)
        obj = generate_object(shown, response, thinking, done=script.reason)
        if not req.get("raw"):
            obj["context"] = [
                int(hashlib.sha256(v.encode()).hexdigest()[:4], 16) for _, v in script.pieces
            ]
        obj.update(metrics(total, count_tokens(prompt), len(script.pieces)))
        return obj

    if not stream:
        return Answer(final(script.joined("content"), script.joined("thinking")))

    def items():
        for kind, value in script.pieces:
            if kind == "thinking":
                yield generate_object(shown, "", thinking=value)
            else:
                yield generate_object(shown, value)
        yield final("", "")

    return Stream(items(), generation=True)


def embed(app, req):
    """EmbedHandler."""
    started = time.monotonic_ns()
    given = req.get("input")
    if isinstance(given, str):
        inputs = [given] if given else []
    elif isinstance(given, list):
        if not all(isinstance(i, str) for i in given):
            raise ApiError(400, "invalid input type")
        inputs = given
    elif given is None:
        inputs = []
    else:
        raise ApiError(400, "invalid input type")
    shown = req.get("model", "")
    name = app.store.existing_name(Name.parse(shown))
    model, _ = app.schedule(str(name), [], req.get("options"), req.get("keep_alive"), shown)
    if not inputs:
        return Answer({"model": shown, "embeddings": []})
    length = gguf_key(model.metadata(), "embedding_length") or 768
    dims = req.get("dimensions", 0)
    vectors = []
    for text in inputs:
        vector = embedding(text, length)
        if 0 < dims < len(vector):
            vector = normalize(vector[:dims])
        vectors.append(vector)
    total = max(1, time.monotonic_ns() - started)
    return Answer(
        {
            "model": shown,
            "embeddings": vectors,
            "total_duration": total,
            "load_duration": total // 10,
            "prompt_eval_count": sum(count_tokens(t) for t in inputs),
        }
    )


def embeddings(app, req):
    """EmbeddingsHandler (the older /api/embeddings)."""
    shown = req.get("model", "")
    name = Name.parse(shown)
    if not name.valid():
        raise ApiError(400, "model is required")
    model, _ = app.schedule(str(name), [], req.get("options"), req.get("keep_alive"), shown)
    if not req.get("prompt"):
        return Answer({"embedding": []})
    length = gguf_key(model.metadata(), "embedding_length") or 768
    return Answer({"embedding": embedding(req["prompt"], length)})


def tags(app, _req=None):
    """ListHandler: models whose config blob reads, most recently modified first."""
    models = []
    for name, manifest in app.store.manifests().items():
        config = {}
        if manifest.config.get("digest"):
            try:
                config = json.loads(app.store.blob_path(manifest.config["digest"]).read_bytes())
            except (OSError, ValueError) as e:
                log("WARN", "bad manifest filepath", name=name, error=e)
                continue
        shown = name.short()
        models.append(
            {
                "name": shown,
                "model": shown,
                "modified_at": go_time(manifest.modified),
                "size": manifest.size(),
                "digest": manifest.digest,
                "details": {
                    "parent_model": "",
                    "format": config.get("model_format", ""),
                    "family": config.get("model_family", ""),
                    "families": config.get("model_families"),
                    "parameter_size": config.get("model_type", ""),
                    "quantization_level": config.get("file_type", ""),
                },
            }
        )
    # most recently modified first, to the second, as Go compares ModifiedAt.Unix()
    models.sort(key=lambda m: int(go_time_parse(m["modified_at"]).timestamp()), reverse=True)
    return Answer({"models": models})


def ps(app, _req=None):
    """PsHandler: loaded models, the longest to live first."""
    now = now_utc()
    models = []
    with app.lock:
        for key, (model, expires, num_ctx) in list(app.loaded.items()):
            if expires < now:
                app.loaded.pop(key)
                continue
            models.append(
                {
                    "name": model.short,
                    "model": model.short,
                    "size": model.manifest.size(),
                    "digest": model.manifest.digest,
                    "details": model.details(parent=False),
                    "expires_at": go_time(expires.astimezone()),
                    "size_vram": 0,
                    "context_length": num_ctx,
                }
            )
    models.sort(key=lambda m: int(go_time_parse(m["expires_at"]).timestamp()), reverse=True)
    return Answer({"models": models})


def quote_modelfile(text):
    """parser's quote()."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


def go_value(value, syntax=False):
    """fmt's %v (or %#v with `syntax`) for JSON values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return go_quote(value) if syntax else value
    return str(value)


def show(app, req):
    """ShowHandler and GetModelInfo."""
    shown = req.get("model") or req.get("name")
    if not shown:
        raise ApiError(400, "model is required")
    name = Name.parse(shown)
    if not name.valid():
        raise ApiError(500, "invalid model path")
    name = app.store.existing_name(name)
    model = app.get_model(str(name), shown)
    if req.get("system"):
        model.system = req["system"]
    params = []
    for key in sorted(model.options):
        value = model.options[key]
        for item in value if isinstance(value, list) else [value]:
            params.append(f"{key:<30} {go_value(item, syntax=True)}")
    options = {**model.options, **(req.get("options") or {})}
    lines = [f"FROM {model.model_path or ''}"]
    if model.template:
        lines.append("TEMPLATE " + quote_modelfile(model.template))
    if model.system:
        lines.append("SYSTEM " + quote_modelfile(model.system))
    for key in sorted(options):
        value = options[key]
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {quote_modelfile(go_value(item))}")
    lines += ["LICENSE " + quote_modelfile(text) for text in model.license]
    lines += [
        f"MESSAGE {m.get('role', '')} {quote_modelfile(m.get('content', ''))}"
        for m in model.messages
    ]
    modelfile = (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        f"# FROM {model.short}\n\n" + "".join(line + "\n" for line in lines)
    )
    try:
        values = model.metadata()
    except OSError as e:
        raise ApiError(
            500, f"open {e.filename or model.model_path}: no such file or directory"
        ) from None
    except ValueError as e:
        raise ApiError(500, str(e)) from None
    info = {}
    for key in sorted(values):
        if key in ("general.name", "tokenizer.chat_template"):
            continue
        value = values[key]
        info[key] = (
            [] if isinstance(value, list) and len(value) > 5 and not req.get("verbose") else value
        )
    response = {}
    if model.license:
        response["license"] = "\n".join(model.license)
    response["modelfile"] = modelfile
    if params:
        response["parameters"] = "\n".join(params)
    if model.template:
        response["template"] = model.template
    if model.system:
        response["system"] = model.system
    response["details"] = model.details()
    if model.messages:
        response["messages"] = [
            {"role": m.get("role", ""), "content": m.get("content", "")} for m in model.messages
        ]
    response["model_info"] = info
    response["capabilities"] = model.capabilities()
    response["modified_at"] = go_time(model.manifest.modified)
    return Answer(response)


def pull(app, req):
    """PullHandler."""
    name = Name.parse(req.get("model") or req.get("name") or "")
    if not name.valid():
        raise ApiError(400, "invalid model name")
    name = app.store.existing_name(name)
    items = pull_progress(app, name)
    return wait_for_stream(items) if req.get("stream", True) is False else Stream(items)


def pull_progress(app, name):
    """PullModel's progress, as dicts; an {"error": ...} ends it."""
    store = app.store
    try:
        old = store.manifest(name).digests()
    except (OSError, ValueError):
        old = []
    yield {"status": "pulling manifest"}
    url = f"https://{name.host}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"
    if app.faults.take_pull_failure():
        yield {
            "error": f'pull model manifest: Get "{url}": read tcp 127.0.0.1:0->{name.host}: '
            "read: connection reset by peer"
        }
        return
    found = registry_model(name)
    if found is None:
        if name.host == REGISTRY:
            yield {"error": "pull model manifest: file does not exist"}
        else:
            yield {
                "error": f'pull model manifest: Get "{url}": dial tcp: lookup {name.host}: '
                "no such host"
            }
        return
    raw, blobs = found
    manifest = json.loads(raw)
    for layer in [*manifest["layers"], manifest["config"]]:
        digest, size = layer["digest"], layer["size"]
        status = "pulling " + digest[7:19]
        path = store.blob_path(digest)
        if path.exists():
            yield {
                "status": status,
                "digest": digest,
                "total": path.stat().st_size,
                "completed": path.stat().st_size,
            }
            continue
        yield {"status": status, "digest": digest, "total": size}
        if size // 2:
            yield {"status": status, "digest": digest, "total": size, "completed": size // 2}
        store.write_blob(blobs[digest])
        yield {"status": status, "digest": digest, "total": size, "completed": size}
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    store.write_manifest(name, raw)
    new = set(_digests(manifest))
    unused = [d for d in old if d not in new]
    if unused:
        yield {"status": "removing unused layers"}
        used = store.used_digests()
        for digest in unused:
            if digest not in used:
                with contextlib.suppress(OSError):
                    store.blob_path(digest).unlink()
    yield {"status": "success"}


def _digests(manifest):
    return [layer["digest"] for layer in manifest.get("layers", [])] + [
        manifest["config"]["digest"]
    ]


def push(app, req):
    """PushHandler: there is no registry to push to here."""
    if not (req.get("model") or req.get("name")):
        raise ApiError(400, "model is required")
    items = iter(
        [{"status": "retrieving manifest"}, {"error": "push is not reproduced by the double"}]
    )
    return wait_for_stream(items) if req.get("stream", True) is False else Stream(items)


def delete(app, req):
    """DeleteHandler."""
    shown = req.get("model") or req.get("name") or ""
    name = Name.parse(shown)
    if not name.valid():
        raise ApiError(400, f"name {go_quote(shown)} is invalid")
    name = app.store.existing_name(name)
    try:
        manifest = app.store.manifest(name)
    except FileNotFoundError:
        raise ApiError(404, f"model '{shown}' not found") from None
    except ValueError as e:
        raise ApiError(500, str(e)) from None
    app.store.remove(manifest)
    return Empty(200)


def copy(app, req):
    """CopyHandler and CopyModel."""
    source, destination = req.get("source", ""), req.get("destination", "")
    src = Name.parse(source)
    if not src.valid():
        raise ApiError(400, f"source {go_quote(source)} is invalid")
    src = app.store.existing_name(src)
    dst = Name.parse(destination)
    if not dst.valid():
        raise ApiError(400, f"destination {go_quote(destination)} is invalid")
    dst = app.store.existing_name(dst)
    if src.parts() != dst.parts():
        try:
            raw = app.store.manifest_path(src).read_bytes()
        except FileNotFoundError:
            raise ApiError(404, f"model {go_quote(source)} not found") from None
        app.store.write_manifest(dst, raw)
    return Empty(200)


def fs_valid_path(path):
    """io/fs.ValidPath."""
    if path == ".":
        return True
    return bool(path) and all(part not in ("", ".", "..") for part in path.split("/"))


def create(app, req):
    """CreateHandler."""
    for path in req.get("files") or {}:
        if not fs_valid_path(path):
            raise ApiError(400, "file path must be relative")
    name = Name.parse(req.get("model") or req.get("name") or "")
    if not name.valid():
        raise ApiError(400, "invalid model name")
    name = app.store.existing_name(name)
    items = create_progress(app, req, name)
    return wait_for_stream(items) if req.get("stream", True) is False else Stream(items)


MODEL_LAYERS = (
    "application/vnd.ollama.image.model",
    "application/vnd.ollama.image.projector",
    "application/vnd.ollama.image.adapter",
)


def from_model(app, source):
    """parseFromModel: the source's layers (pulled first when missing, progress yielded);
    returns (layers, GGUF metadata of the model layers)."""
    store = app.store
    try:
        manifest = store.manifest(source)
    except FileNotFoundError:
        for item in pull_progress(app, source):
            yield item
            if "error" in item:
                return [], []
        manifest = store.manifest(source)
    layers, ggufs = [], []
    for layer in manifest.layers:
        path = store.blob_path(layer["digest"])
        if not path.exists():
            yield {"error": f"stat {path}: no such file or directory"}
            return [], []
        if layer["mediaType"] in MODEL_LAYERS:
            ggufs.append(gguf_metadata(path))
        layers.append(
            {
                "mediaType": layer["mediaType"],
                "digest": layer["digest"],
                "size": path.stat().st_size,
                "from": source.short(),
                "status": f"using existing layer {layer['digest']}",
            }
        )
    return layers, ggufs


def create_progress(app, req, name):
    """What CreateHandler's goroutine sends: progress dicts, {"error": ...} on failure."""
    store = app.store
    try:
        old = store.manifest(name)
    except (OSError, ValueError):
        old = None
    layers, ggufs = [], []  # layers: dicts with a "status" to report
    if req.get("from"):
        source = Name.parse(req["from"])
        if not source.valid():
            yield {"error": "invalid model name", "status": 400}
            return
        if req.get("remote_host"):
            yield {"error": "remote models are not reproduced by the double", "status": 400}
            return
        # parseFromModel; on an error CreateHandler reports it and carries on without layers
        layers, ggufs = yield from from_model(app, source)
    elif req.get("files"):
        for _, digest in sorted(req["files"].items()):
            yield {"status": "parsing GGUF"}
            try:
                path = store.blob_path(digest)
                with open(path, "rb") as f:
                    magic = f.read(4)
                if magic != b"GGUF":
                    yield {"error": "supplied file was not in GGUF format", "status": 400}
                    return
                ggufs.append(gguf_metadata(path))
            except FileNotFoundError as e:
                yield {"error": f"open {e.filename}: no such file or directory"}
                return
            except ValueError as e:
                yield {"error": str(e)}
                return
            layers.append(
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": digest,
                    "size": path.stat().st_size,
                    "from": str(path),
                    "status": f"using existing layer {digest}",
                }
            )
    else:
        yield {"error": "neither 'from' or 'files' was specified", "status": 400}
        return
    if req.get("quantize") or req.get("quantization"):
        yield {"error": "quantization is not reproduced by the double", "status": 400}
        return

    config = {
        "model_format": "",
        "model_family": "",
        "model_families": None,
        "model_type": "",
        "file_type": "",
    }
    for values in ggufs:
        config["model_format"] = config["model_format"] or "gguf"
        config["model_family"] = config["model_family"] or values.get("general.architecture", "")
        config["model_type"] = config["model_type"] or human_number(
            values.get("general.parameter_count", 0)
        )
        config["file_type"] = config["file_type"] or FILE_TYPES.get(
            values.get("general.file_type", 1), "F16"
        )
        config["model_families"] = (config["model_families"] or []) + [
            values.get("general.architecture", "")
        ]
    for key in ("renderer", "parser"):
        if req.get(key):
            config[key] = req[key]

    def replace(kind, data):
        nonlocal layers
        layers = [layer for layer in layers if layer["mediaType"] != kind]
        digest, size, status = store.write_blob(data)
        layers.append(
            {"mediaType": kind, "digest": digest, "size": size, "status": f"{status} {digest}"}
        )

    if req.get("template"):
        replace("application/vnd.ollama.image.template", req["template"].encode())
    if req.get("system"):
        replace("application/vnd.ollama.image.system", req["system"].encode())
    licenses = req.get("license")
    for text in [licenses] if isinstance(licenses, str) else licenses or []:
        if text:
            digest, size, status = store.write_blob(str(text).encode())
            layers.append(
                {
                    "mediaType": "application/vnd.ollama.image.license",
                    "digest": digest,
                    "size": size,
                    "status": f"{status} {digest}",
                }
            )
    parameters = dict(req.get("parameters") or {})
    for layer in layers:
        if layer["mediaType"] == "application/vnd.ollama.image.params":
            for key, value in json.loads(store.blob_path(layer["digest"]).read_bytes()).items():
                parameters.setdefault(key, value)
    if parameters:
        replace(
            "application/vnd.ollama.image.params", (go_json(go_map(parameters)) + "\n").encode()
        )
    if req.get("messages"):
        shown = [
            {"role": m.get("role", ""), "content": m.get("content", "")} for m in req["messages"]
        ]
        replace("application/vnd.ollama.image.messages", (go_json(shown) + "\n").encode())
    config.update(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    )
    digest, size, _ = store.write_blob((go_json(config) + "\n").encode())
    for layer in layers:
        yield {"status": layer.pop("status")}
    yield {"status": "writing manifest"}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": digest,
            "size": size,
        },
        "layers": layers,
    }
    store.write_manifest(name, (go_json(manifest) + "\n").encode())
    if old is not None:
        used = store.used_digests()
        for stale in old.digests():
            if stale not in used:
                with contextlib.suppress(OSError):
                    store.blob_path(stale).unlink()
    yield {"status": "success"}


# ---------------------------------------------------------------------------- OpenAI layer


class OpenAIError(ApiError):
    """An error the /v1 middleware itself answers: 400, typed invalid_request_error."""


def openai_error(status, message):
    """openai.NewError."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def go_type_name(value):
    """fmt's %T for a decoded JSON value."""
    return {
        "null": "<nil>",
        "bool": "bool",
        "number": "float64",
        "string": "string",
        "array": "[]interface {}",
        "object": "map[string]interface {}",
    }[_json_kind(value)]


def tool_call_id():
    return "call_" + "".join(
        random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8)
    )


def from_tool_calls(calls):
    out = []
    for call in calls or []:
        try:
            arguments = json.loads(call.get("function", {}).get("arguments", ""))
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise OpenAIError(400, "invalid tool call arguments")
        out.append(
            {"function": {"name": call.get("function", {}).get("name", ""), "arguments": arguments}}
        )
    return out


def from_chat_request(req):
    """openai.fromChatRequest: the /api/chat request a /v1/chat/completions one becomes."""
    messages = []
    given = req.get("messages", [])
    for msg in given:
        role = msg.get("role", "").lower()
        tool_name = ""
        if role == "tool":
            tool_name = msg.get("name", "")
            if not tool_name and msg.get("tool_call_id"):
                for other in reversed(given):
                    for call in other.get("tool_calls") or []:
                        if call.get("id") == msg["tool_call_id"]:
                            tool_name = tool_name or call.get("function", {}).get("name", "")
        content = msg.get("content")
        if isinstance(content, str):
            messages.append(
                {
                    "role": role,
                    "content": content,
                    "thinking": msg.get("reasoning", ""),
                    "tool_calls": from_tool_calls(msg.get("tool_calls")),
                    "tool_name": tool_name,
                }
            )
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise OpenAIError(400, "invalid message format")
                if part.get("type") == "text":
                    if not isinstance(part.get("text"), str):
                        raise OpenAIError(400, "invalid message format")
                    messages.append({"role": role, "content": part["text"]})
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str):
                        raise OpenAIError(400, "invalid message format")
                    kinds = ("jpeg", "jpg", "png", "webp")
                    prefix = next(
                        (
                            f"data:image/{k};base64,"
                            for k in kinds
                            if url.startswith(f"data:image/{k};base64,")
                        ),
                        None,
                    )
                    if prefix is None:
                        raise OpenAIError(400, "invalid image input")
                    try:
                        image = base64.b64decode(url[len(prefix) :], validate=True)
                    except ValueError:
                        raise OpenAIError(400, "invalid message format") from None
                    messages.append({"role": role, "content": "", "images": [image]})
                else:
                    raise OpenAIError(400, "invalid message format")
            if messages and msg.get("tool_calls"):
                messages[-1]["tool_calls"] = from_tool_calls(msg["tool_calls"])
                messages[-1]["tool_name"] = tool_name or messages[-1].get("tool_name", "")
                messages[-1]["thinking"] = msg.get("reasoning", "")
        else:
            if "tool_calls" not in msg:
                raise OpenAIError(400, f"invalid message content type: {go_type_name(content)}")
            messages.append(
                {
                    "role": role,
                    "content": "",
                    "thinking": msg.get("reasoning", ""),
                    "tool_calls": from_tool_calls(msg["tool_calls"]),
                }
            )
    options = openai_options(req, stop_strict=False)
    for key in ("frequency_penalty", "presence_penalty"):
        if key in req:
            options[key] = req[key]
    options["top_p"] = req.get("top_p", 1.0)
    chat_req = {
        "model": req.get("model", ""),
        "messages": messages,
        "options": options,
        "stream": bool(req.get("stream")),
    }
    response_format = req.get("response_format") or {}
    kind = str(response_format.get("type", "")).strip().lower()
    if kind == "json_object":
        chat_req["format"] = '"json"'
    elif kind == "json_schema" and (response_format.get("json_schema") or {}).get("schema"):
        chat_req["format"] = response_format["json_schema"]["schema"]
    if "reasoning" in req:
        if "effort" not in req["reasoning"]:
            raise Panic("runtime error: invalid memory address or nil pointer dereference")
        chat_req["think"] = req["reasoning"]["effort"]
    elif "reasoning_effort" in req:
        chat_req["think"] = req["reasoning_effort"]
    if req.get("tools"):
        chat_req["tools"] = req["tools"]
    return chat_req


def openai_options(req, stop_strict):
    options = {}
    stop = req.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        if stop_strict:
            for item in stop:
                if not isinstance(item, str):
                    raise OpenAIError(400, f"invalid type for 'stop' field: {go_type_name(item)}")
        options["stop"] = [s for s in stop if isinstance(s, str)]
    if "max_tokens" in req:
        options["num_predict"] = req["max_tokens"]
    options["temperature"] = req.get("temperature", 1.0)
    if "seed" in req:
        options["seed"] = req["seed"]
    return options


def from_completion_request(req):
    """openai.fromCompleteRequest."""
    options = openai_options(req, stop_strict=True)
    options["frequency_penalty"] = req.get("frequency_penalty", 0)
    options["presence_penalty"] = req.get("presence_penalty", 0)
    options["top_p"] = req.get("top_p") or 1.0
    return {
        "model": req.get("model", ""),
        "prompt": req.get("prompt", ""),
        "options": options,
        "stream": bool(req.get("stream")),
        "suffix": req.get("suffix", ""),
    }


def openai_tool_calls(calls):
    """toToolCalls."""
    return [
        {
            "id": tool_call_id(),
            "index": call["function"].get("index", 0),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": go_json(call["function"]["arguments"]),
            },
        }
        for call in calls or []
    ]


def openai_message(role, message):
    out = {"role": role, "content": message.get("content", "")}
    if message.get("thinking"):
        out["reasoning"] = message["thinking"]
    calls = openai_tool_calls(message.get("tool_calls"))
    if calls:
        out["tool_calls"] = calls
    return out, calls


def usage(obj):
    prompt, completion = obj.get("prompt_eval_count", 0), obj.get("eval_count", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def unix(text):
    return int(go_time_parse(text).timestamp())


def to_chat_completion(ident, obj):
    message, calls = openai_message(obj["message"].get("role", ""), obj["message"])
    reason = "tool_calls" if calls else obj.get("done_reason") or None
    return {
        "id": ident,
        "object": "chat.completion",
        "created": unix(obj["created_at"]),
        "model": obj.get("model", ""),
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": usage(obj),
    }


def chat_chunks(ident, items, include_usage):
    """ChatWriter for a stream: one chunk per /api/chat object, usage, then [DONE]."""
    tool_call_sent = False
    for obj in items:
        message = obj.get("message") or {}
        delta, calls = openai_message("assistant", message)
        reason = obj.get("done_reason")
        if reason and (tool_call_sent or calls):
            reason = "tool_calls"
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": obj.get("model", ""),
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason or None}],
        }
        tool_call_sent = tool_call_sent or bool(calls)
        yield chunk
        if obj.get("done"):
            if include_usage:
                yield {**chunk, "choices": [], "usage": usage(obj)}
            yield "[DONE]"


def to_completion(ident, obj):
    return {
        "id": ident,
        "object": "text_completion",
        "created": unix(obj["created_at"]),
        "model": obj.get("model", ""),
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "text": obj.get("response", ""),
                "index": 0,
                "finish_reason": obj.get("done_reason") or None,
            }
        ],
        "usage": usage(obj),
    }


def completion_chunks(ident, items, include_usage):
    """CompleteWriter for a stream."""
    for obj in items:
        chunk = {
            "id": ident,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [
                {
                    "text": obj.get("response", ""),
                    "index": 0,
                    "finish_reason": obj.get("done_reason") or None,
                }
            ],
            "model": obj.get("model", ""),
            "system_fingerprint": "fp_ollama",
        }
        if include_usage:
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        yield chunk
        if obj.get("done"):
            if include_usage:
                yield {**chunk, "choices": [], "usage": usage(obj)}
            yield "[DONE]"


def to_model(name, modified_at):
    return {
        "id": name,
        "object": "model",
        "created": unix(modified_at),
        "owned_by": Name.parse(name).namespace,
    }


# ---------------------------------------------------------------------------- HTTP


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


CORS_SCHEMAS = (
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
CORS_HEADERS = (
    "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,X-Stainless-Arch,"
    "X-Stainless-Async,X-Stainless-Custom-Poll-Interval,X-Stainless-Helper-Method,"
    "X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,X-Stainless-Poll-Helper,"
    "X-Stainless-Retry-Count,X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout"
)


class Cors:
    """gin-contrib/cors as Ollama configures it (AllowWildcard, AllowBrowserExtensions)."""

    def __init__(self, env_value):
        origins = env_value.split(",") if env_value else []
        for host in ("localhost", "127.0.0.1", "0.0.0.0"):
            origins += [
                f"http://{host}",
                f"https://{host}",
                f"http://{host}:*",
                f"https://{host}:*",
            ]
        origins += ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
        for origin in origins:
            if "*" not in origin and not origin.startswith(CORS_SCHEMAS):
                raise ValueError(
                    "bad origin: origins must contain '*' or include " + ",".join(CORS_SCHEMAS)
                )
        self.allow_all = "*" in origins
        self.exact = {o.strip().lower() for o in origins}
        self.wildcards = []
        for origin in origins:
            if "*" in origin:
                if origin.count("*") > 1:
                    raise ValueError("only one * is allowed")
                i = origin.index("*")
                self.wildcards.append((origin[:i], origin[i + 1 :]))

    def allowed(self, origin):
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(a) and origin.endswith(b) for a, b in self.wildcards)

    def preflight(self, origin):
        headers = [
            ("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"),
            ("Access-Control-Allow-Headers", CORS_HEADERS),
            ("Access-Control-Max-Age", "43200"),
        ]
        if self.allow_all:
            return [*headers, ("Access-Control-Allow-Origin", "*")]
        vary = [
            ("Vary", v)
            for v in ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
        ]
        return [*headers, *vary, ("Access-Control-Allow-Origin", origin)]

    def normal(self, origin):
        if self.allow_all:
            return [("Access-Control-Allow-Origin", "*")]
        return [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin)]


PRIVATE_NETS = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
]


def local_address(host):
    """What allowedHostsMiddleware lets through by IP: loopback, private, unspecified, ours."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_unspecified
        or any(ip in net for net in PRIVATE_NETS if net.version == ip.version)
    ):
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(ip), 0))  # binds only to an address of this machine's interfaces
        except OSError:
            return False
    return True


def allowed_host(host):
    host = host.lower()
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith((".localhost", ".local", ".internal"))


def split_host_port(hostport):
    """net.SplitHostPort; None when it fails."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            return None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None
    host, port = hostport.split(":")
    return host, port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (aiohttp pools) would otherwise wait ~40 ms per request
    # on Nagle + delayed ACK, as a real engine on Go or uvicorn does not.
    disable_nagle_algorithm = True

    # -- plumbing

    def log_message(self, fmt, *args):
        stamp = time.strftime("%Y/%m/%d - %H:%M:%S")
        sys.stderr.write(f"[GIN] {stamp} | {self.client_address[0]} | {fmt % args}\n")

    def send_response(self, code, message=None):
        # Go's server sends no Server header
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def end_headers(self):
        for key, value in getattr(self, "extra_headers", []):
            self.send_header(key, value)
        super().end_headers()

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_OPTIONS(self):
        self.dispatch("OPTIONS")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self, method):
        self.app = self.server.app
        self.extra_headers = []
        try:
            self.body = self.read_body()
        except ValueError:
            self.close_connection = True
            self.send_bytes(400, b"400 Bad Request", "text/plain; charset=utf-8")
            return
        if self.request_version == "HTTP/1.1" and "Host" not in self.headers:
            self.close_connection = True
            self.send_bytes(
                400, b"400 Bad Request: missing required Host header", "text/plain; charset=utf-8"
            )
            return
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        route = find_route(method, path)
        slash = method in TREES and path != "/" and path.endswith("/")
        if route is None and slash and find_route(method, path[:-1]):  # RedirectTrailingSlash
            location = path[:-1] + (f"?{url.query}" if url.query else "")
            self.redirect(301 if method == "GET" else 307, location)
            return
        try:
            if not self.middleware(method):
                return
            if route is None:
                allowed = [m for m in TREES if m != method and find_route(m, path)]
                if allowed:
                    self.extra_headers.append(("Allow", ", ".join(allowed)))
                    self.send_bytes(405, b"405 method not allowed", "text/plain")
                else:
                    self.send_bytes(404, b"404 page not found", "text/plain")
                return
            handler, param = route
            handler(self, param)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def middleware(self, method):
        """cors.New(...) then allowedHostsMiddleware; False when they answered."""
        origin = self.headers.get("Origin")
        host_header = self.headers.get("Host", "")
        if origin and origin not in (f"http://{host_header}", f"https://{host_header}"):
            if not self.app.cors.allowed(origin):
                self.send_bytes(403, b"", None)
                return False
            if method == "OPTIONS":
                self.extra_headers += self.app.cors.preflight(origin)
                self.send_bytes(204, b"", None)
                return False
            self.extra_headers += self.app.cors.normal(origin)
        if self.app.check_hosts:
            split = split_host_port(host_header)
            host = split[0] if split else host_header
            if local_address(host):
                return True
            if allowed_host(host):
                if method == "OPTIONS":
                    self.send_bytes(204, b"", None)
                    return False
                return True
            self.send_bytes(403, b"", None)
            return False
        return True

    def redirect(self, status, location):
        self.send_response(status)
        self.send_header("Location", location)
        body = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode() if status == 301 else b""
        if body:
            self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_bytes(self, status, data, content_type):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def send_json(self, status, obj, encoder=False):
        """c.JSON, or (encoder) json.NewEncoder as the /v1 writers use it."""
        if encoder:
            self.send_bytes(status, (go_json(obj) + "\n").encode(), "application/json")
        else:
            self.send_bytes(status, go_json(obj).encode(), "application/json; charset=utf-8")

    def send_stream(self, chunks, content_type, generation=False):
        """Send an iterable of byte strings with chunked encoding, applying the faults."""
        faults = self.app.faults if generation else None
        if faults and faults.hang_after == 0:
            self.hang()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for sent, data in enumerate(chunks):
            if faults:
                if sent == faults.cut_after:
                    self.cut()
                    return
                if sent == faults.hang_after:
                    self.hang()
                if faults.malformed and sent == 1:
                    data = data[: len(data) // 2] + b"\n"
            if self.app.faults.chunk_delay:
                time.sleep(self.app.faults.chunk_delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def send_answer(self, data, content_type, generation):
        """A one-object answer, with the generation faults applied."""
        faults = self.app.faults
        if not generation:
            self.send_bytes(200, data, content_type)
            return
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

    # -- routes

    def native(self, function, shape, generation=False):
        """A native route: decode, run, answer as gin does."""
        try:
            reply = function(self.app, decode_body(self.body, shape) if shape else {})
        except ApiError as e:
            self.send_json(e.status, {"error": e.message})
            return
        except (OSError, ValueError) as e:  # what Go answers as 500 err.Error()
            self.send_json(500, {"error": str(e)})
            return
        except Panic:
            self.send_bytes(500, b"", None)
            return
        if isinstance(reply, Stream):
            lines = (go_json(item).encode() + b"\n" for item in guarded(reply.items))
            self.send_stream(lines, "application/x-ndjson", generation=reply.generation)
        elif isinstance(reply, Empty):
            self.send_bytes(reply.status, b"", None)
        else:
            data = go_json(reply.obj).encode()
            self.send_answer(data, "application/json; charset=utf-8", generation)

    def openai(self, shape, convert, run, render, generation=False):
        """A /v1 route: the middleware's decoding and conversion, Ollama's handler, the
        middleware's writer. `render(reply)` gives bytes (one answer) or an iterable."""
        try:
            req = convert(decode_body(self.body, shape, empty="EOF"))
        except ApiError as e:
            self.send_json(400, openai_error(400, e.message))
            return
        except Panic:
            self.send_bytes(500, b"", None)
            return
        try:
            reply = run(self.app, req)
        except ApiError as e:  # BaseWriter.writeError: the handler's status, typed api_error
            self.send_json(e.status, openai_error(500, e.message), encoder=True)
            return
        except (OSError, ValueError) as e:
            self.send_json(500, openai_error(500, str(e)), encoder=True)
            return
        except Panic:
            self.send_bytes(500, b"", None)
            return
        if isinstance(reply, Stream):
            reply.items = guarded(reply.items)
            events = render(reply)
            lines = (
                b"data: " + (e if isinstance(e, str) else go_json(e)).encode() + b"\n\n"
                for e in events
            )
            self.send_stream(lines, "text/event-stream", generation=reply.generation)
        else:
            data = (go_json(render(reply)) + "\n").encode()
            self.send_answer(data, "application/json", generation)

    def root(self, _):
        self.send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")

    def version(self, _):
        self.send_json(200, {"version": VERSION})

    def api_tags(self, _):
        self.native(tags, None)

    def api_ps(self, _):
        self.native(ps, None)

    def api_show(self, _):
        self.native(show, SHOW_REQUEST)

    def api_pull(self, _):
        self.native(pull, PULL_REQUEST)

    def api_push(self, _):
        self.native(push, PULL_REQUEST)

    def api_delete(self, _):
        self.native(delete, DELETE_REQUEST)

    def api_copy(self, _):
        self.native(copy, COPY_REQUEST)

    def api_create(self, _):
        self.native(create, CREATE_REQUEST)

    def api_chat(self, _):
        self.native(chat, CHAT_REQUEST, generation=True)

    def api_generate(self, _):
        self.native(generate, GENERATE_REQUEST, generation=True)

    def api_embed(self, _):
        self.native(embed, EMBED_REQUEST)

    def api_embeddings(self, _):
        self.native(embeddings, EMBEDDING_REQUEST)

    def head_blob(self, digest):
        try:
            path = self.app.store.blob_path(digest)
        except ValueError as e:
            self.send_json(400, {"error": str(e)})
            return
        if not path.exists():
            self.send_json(404, {"error": f"blob {go_quote(digest)} not found"})
            return
        self.send_bytes(200, b"", None)

    def create_blob(self, digest):
        store = self.app.store
        try:
            path = store.blob_path(digest)
        except ValueError as e:
            self.send_json(400, {"error": str(e)})
            return
        if path.exists():
            self.send_bytes(200, b"", None)
            return
        actual, _, _ = store.write_blob(self.body)
        if actual != digest:
            self.send_json(
                400,
                {"error": f"digest mismatch, expected {go_quote(digest)}, got {go_quote(actual)}"},
            )
            return
        self.send_bytes(201, b"", None)

    def v1_chat(self, _):
        ident = f"chatcmpl-{random.randrange(999)}"
        options = {}

        def convert(req):
            if not req.get("messages"):
                raise ApiError(400, "[] is too short - 'messages'")
            options["usage"] = (req.get("stream_options") or {}).get("include_usage")
            return from_chat_request(req)

        def render(reply):
            if isinstance(reply, Stream):
                return chat_chunks(ident, reply.items, options["usage"])
            return to_chat_completion(ident, reply.obj)

        self.openai(OPENAI_CHAT_REQUEST, convert, chat, render, generation=True)

    def v1_completions(self, _):
        ident = f"cmpl-{random.randrange(999)}"
        options = {}

        def convert(req):
            options["usage"] = (req.get("stream_options") or {}).get("include_usage")
            return from_completion_request(req)

        def render(reply):
            if isinstance(reply, Stream):
                return completion_chunks(ident, reply.items, options["usage"])
            return to_completion(ident, reply.obj)

        self.openai(OPENAI_COMPLETION_REQUEST, convert, generate, render, generation=True)

    def v1_embeddings(self, _):
        model = {}

        def convert(req):
            given = req.get("input")
            if given == "":
                given = [""]
            if given is None or given == []:
                raise ApiError(400, "invalid input")
            model["name"] = req.get("model", "")
            return {"model": model["name"], "input": given, "dimensions": req.get("dimensions", 0)}

        def render(reply):
            data = [
                {"object": "embedding", "embedding": e, "index": i}
                for i, e in enumerate(reply.obj.get("embeddings") or [])
            ]
            tokens = reply.obj.get("prompt_eval_count", 0)
            return {
                "object": "list",
                "data": data or None,
                "model": model["name"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }

        self.openai(OPENAI_EMBED_REQUEST, convert, embed, render)

    def v1_models(self, _):
        models = tags(self.app).obj["models"]
        data = [to_model(m["name"], m["modified_at"]) for m in models]
        self.send_json(200, {"object": "list", "data": data or None}, encoder=True)

    def v1_model(self, name):
        try:
            reply = show(self.app, {"name": name})
        except ApiError as e:
            self.send_json(e.status, openai_error(500, e.message), encoder=True)
            return
        self.send_json(200, to_model(name, reply.obj["modified_at"]), encoder=True)


# The method trees in the order Ollama registers them (gin lists Allow in this order).
TREES = ("HEAD", "GET", "POST", "DELETE")
ROUTES = {
    ("HEAD", "/"): Handler.root,
    ("GET", "/"): Handler.root,
    ("HEAD", "/api/version"): Handler.version,
    ("GET", "/api/version"): Handler.version,
    ("POST", "/api/pull"): Handler.api_pull,
    ("POST", "/api/push"): Handler.api_push,
    ("HEAD", "/api/tags"): Handler.api_tags,
    ("GET", "/api/tags"): Handler.api_tags,
    ("POST", "/api/show"): Handler.api_show,
    ("DELETE", "/api/delete"): Handler.api_delete,
    ("POST", "/api/create"): Handler.api_create,
    ("POST", "/api/copy"): Handler.api_copy,
    ("GET", "/api/ps"): Handler.api_ps,
    ("POST", "/api/generate"): Handler.api_generate,
    ("POST", "/api/chat"): Handler.api_chat,
    ("POST", "/api/embed"): Handler.api_embed,
    ("POST", "/api/embeddings"): Handler.api_embeddings,
    ("POST", "/v1/chat/completions"): Handler.v1_chat,
    ("POST", "/v1/completions"): Handler.v1_completions,
    ("POST", "/v1/embeddings"): Handler.v1_embeddings,
    ("GET", "/v1/models"): Handler.v1_models,
}
PARAM_ROUTES = (
    ("POST", "/api/blobs/", Handler.create_blob),
    ("HEAD", "/api/blobs/", Handler.head_blob),
    ("GET", "/v1/models/", Handler.v1_model),
)


def find_route(method, path):
    """(handler, path parameter) for the request, or None."""
    handler = ROUTES.get((method, path))
    if handler:
        return handler, None
    for route_method, prefix, handler in PARAM_ROUTES:
        param = path[len(prefix) :]
        if method == route_method and path.startswith(prefix) and param and "/" not in param:
            return handler, param
    return None


# ---------------------------------------------------------------------------- serve


def env_var(key):
    """envconfig.Var: spaces and quotes trimmed."""
    return os.environ.get(key, "").strip().strip("\"'")


def env_bool(key):
    """envconfig.Bool: strconv.ParseBool, anything unparsable is true."""
    value = env_var(key)
    if not value:
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    return value not in ("0", "f", "F", "FALSE", "false", "False")


def parse_host(value):
    """envconfig.Host: OLLAMA_HOST -> (scheme, host, port)."""
    value = (value or "").strip().strip("\"'")
    scheme, sep, hostport = value.partition("://")
    default_port = "11434"
    if not sep:
        scheme, hostport = "http", value
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport = hostport.split("/", 1)[0]
    split = split_host_port(hostport)
    if split is None:
        host, port = "127.0.0.1", default_port
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if hostport:
                host = hostport
    else:
        host, port = split
    if not port.isdigit() or int(port) > 65535:
        port = default_port
    return scheme, host, int(port)


def env_number(name, kind, default):
    raw = os.environ.get(name, "")
    try:
        return kind(raw) if raw else default
    except ValueError:
        sys.exit(f"Error: {name}: not a number: {raw!r}")


def serve(args):
    _, host, port = parse_host(os.environ.get("OLLAMA_HOST"))
    models = env_var("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
    try:
        cors = Cors(env_var("OLLAMA_ORIGINS"))
    except ValueError as e:
        sys.stderr.write(f"panic: {e}\n")
        return 2
    store = Store(models)
    store.startup(prune=not env_bool("OLLAMA_NOPRUNE"))
    if args.ready_after:
        time.sleep(args.ready_after)  # "still starting": connections are refused meanwhile
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ThreadingHTTPServer.address_family = family
    ThreadingHTTPServer.allow_reuse_address = True
    # socketserver listens with a backlog of 5: bursts of clients would be dropped and
    # retried by the kernel seconds later, which no real engine does.
    ThreadingHTTPServer.request_queue_size = 128
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        shown = f"[{host}]" if ":" in host else host
        sys.exit(f"Error: listen tcp {shown}:{port}: bind: {(e.strerror or str(e)).lower()}")
    server.daemon_threads = True
    bound = ipaddress.ip_address(server.server_address[0].split("%", 1)[0])
    server.app = App(store, Faults(args), cors, check_hosts=bound.is_loopback)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    shown = f"[{bound}]" if bound.version == 6 else str(bound)
    log(
        "INFO",
        f"Listening on {shown}:{server.server_address[1]} (version {VERSION})",
        models=models,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


# ---------------------------------------------------------------------------- CLI


class CliError(Exception):
    pass


class StatusError(CliError):
    def __init__(self, status, reason, message, streamed):
        self.status = status
        if streamed:  # api.StatusError with Status set, as Client.stream builds it
            text = f"{status} {reason}: {message}" if message else f"{status} {reason}"
        else:
            text = message or "something went wrong, please see the ollama server logs for details"
        super().__init__(text)


class Client:
    """api.Client for OLLAMA_HOST."""

    def __init__(self):
        scheme, host, port = parse_host(os.environ.get("OLLAMA_HOST"))
        shown = f"[{host}]" if ":" in host else host
        self.hostport = f"{shown}:{port}"
        self.base = f"{scheme}://{self.hostport}"
        # Go dials an empty host as the local system; urllib needs a name
        self.url = self.base if host else f"{scheme}://127.0.0.1:{port}"

    def _open(self, method, path, body, accept):
        data = go_json(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Content-Type": "application/json",
                "Accept": accept,
                "User-Agent": f"ollama/{VERSION} (amd64 linux) Go/go1.24.1",
            },
        )
        try:
            return urllib.request.urlopen(request)
        except urllib.error.HTTPError as e:
            return e
        except (urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            what = (
                "connect: connection refused"
                if isinstance(reason, ConnectionRefusedError)
                else str(reason)
            )
            raise CliError(
                f'{method.title()} "{self.base}{path}": dial tcp {self.hostport}: {what}'
            ) from None

    def do(self, method, path, body=None):
        with self._open(method, path, body, "application/json") as response:
            raw = response.read()
            if response.status >= 400:
                try:
                    message = json.loads(raw).get("error", "")
                except (ValueError, AttributeError):
                    message = raw.decode(errors="replace")
                raise StatusError(response.status, response.reason, message, streamed=False)
            return json.loads(raw) if raw else None

    def stream(self, method, path, body):
        with self._open(method, path, body, "application/x-ndjson") as response:
            for line in response:
                if not line.strip():
                    continue
                try:
                    part = json.loads(line)
                except ValueError as e:
                    raise CliError(f"unmarshal: {e}") from None
                if response.status >= 400:
                    raise StatusError(
                        response.status, response.reason, part.get("error", ""), streamed=True
                    )
                if part.get("error"):
                    raise CliError(part["error"])
                yield part

    def heartbeat(self):
        """checkServerHeartbeat, with cmd/start_default.go's message on Linux."""
        try:
            self.do("HEAD", "/")
        except CliError as e:
            if " refused" in str(e) or "could not connect" in str(e):
                raise CliError(
                    "ollama server not responding - could not connect to ollama server, "
                    "run 'ollama serve' to start it"
                ) from None
            raise


def table(header, rows):
    """tablewriter as cmd.go sets it up: left-aligned, no borders, 4 spaces between."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "".join(
            c.ljust(w) + ("    " if i < len(header) - 1 else " ")
            for i, (c, w) in enumerate(zip(header, widths))
        )
    ]
    lines += ["".join(c.ljust(w) + "    " for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def cmd_list(client, args):
    models = client.do("GET", "/api/tags")["models"]
    prefix = args[0].lower() if args else ""
    rows = [
        [
            m["name"],
            m["digest"][:12],
            human_bytes(m["size"]),
            human_time(go_time_parse(m["modified_at"])),
        ]
        for m in models
        if m["name"].lower().startswith(prefix)
    ]
    print(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))


def cmd_ps(client, args):
    models = client.do("GET", "/api/ps")["models"]
    rows = []
    for m in models:
        if args and not m["name"].startswith(args[0]):
            continue
        expires = go_time_parse(m["expires_at"])
        until = "Stopping..." if expires < now_utc() else human_time(expires)
        processor = "100% CPU" if not m["size_vram"] else "100% GPU"
        rows.append(
            [
                m["name"],
                m["digest"][:12],
                human_bytes(m["size"]),
                processor,
                str(m["context_length"]),
                until,
            ]
        )
    print(table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))


def cmd_pull(client, name):
    """PullHandler, one line a step instead of progress bars (on stderr, as the real one)."""
    shown = set()
    status = None
    for part in client.stream(
        "POST", "/api/pull", {"model": "", "username": "", "password": "", "name": name}
    ):
        if part.get("digest"):
            done = part.get("completed", 0)
            if done and done == part.get("total") and part["digest"] not in shown:
                shown.add(part["digest"])
                print(
                    f"pulling {part['digest'][7:19]}: 100% {human_bytes(part['total'])}",
                    file=sys.stderr,
                )
        elif part.get("status") != status:
            status = part.get("status")
            print(status, file=sys.stderr)


def unload(client, name):
    """loadOrUnloadModel with keep_alive 0."""
    for _ in client.stream(
        "POST",
        "/api/generate",
        {
            "model": name,
            "prompt": "",
            "suffix": "",
            "system": "",
            "template": "",
            "keep_alive": "0s",
            "options": None,
        },
    ):
        pass


def cmd_rm(client, names):
    try:
        unload(client, names[0])
    except CliError as e:
        if "not found" not in str(e).lower():
            print(f"Warning: unable to stop model '{names[0]}'", file=sys.stderr)
    for name in names:
        client.do("DELETE", "/api/delete", {"model": "", "name": name})
        print(f"deleted '{name}'")


def cmd_stop(client, name):
    try:
        unload(client, name)
    except CliError as e:
        if "not found" in str(e):
            raise CliError(f'couldn\'t find model "{name}" to stop') from None
        raise


def cmd_cp(client, source, destination):
    client.do("POST", "/api/copy", {"source": source, "destination": destination})
    print(f"copied '{source}' to '{destination}'")


def cmd_run(client, name, prompt_args, flags):
    """RunHandler for one prompt (the interactive prompt is not reproduced)."""
    think = None
    if "think" in flags:
        value = flags["think"]
        if value in ("", "true"):
            think = True
        elif value == "false":
            think = False
        elif value in ("high", "medium", "low"):
            think = value
        else:
            raise CliError(
                f"invalid value for --think: {go_quote(value)} "
                "(must be true, false, high, medium, or low)"
            )
    keep_alive = None
    if flags.get("keepalive"):
        try:
            parse_duration(flags["keepalive"])
        except ValueError as e:
            raise CliError(str(e)) from None
        keep_alive = flags["keepalive"]
    prompts = list(prompt_args)
    interactive = True
    if not sys.stdin.isatty():
        prompts.insert(0, sys.stdin.read())
        interactive = False
    prompt = " ".join(prompts)
    if prompts or not sys.stdout.isatty():
        interactive = False
    try:
        info = client.do(
            "POST",
            "/api/show",
            {
                "model": "",
                "system": "",
                "template": "",
                "verbose": False,
                "options": None,
                "name": name,
            },
        )
    except StatusError as e:
        if e.status != 404:
            raise
        cmd_pull(client, name)
        info = client.do("POST", "/api/show", {"name": name})
    if "think" not in flags and "thinking" in (info.get("capabilities") or []):
        think = True
    if interactive:
        raise CliError(
            "the interactive prompt is not reproduced by the Ollama double: give a prompt"
        )
    request = {"model": name, "prompt": prompt, "context": [], "options": {}}
    if flags.get("format") == "json":
        request["format"] = "json"
    elif flags.get("format"):
        request["format"] = flags["format"]
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    if think is not None:
        request["think"] = think
    hide = "hidethinking" in flags
    opened = closed = False
    thought = ""
    out = sys.stdout
    for part in client.stream("POST", "/api/generate", request):
        content = part.get("response", "")
        if part.get("thinking") and not hide:
            if not opened:
                out.write("Thinking...\n")
                opened, closed = True, False
            thought += part["thinking"]
            out.write(part["thinking"])
        if opened and not closed and (content or part.get("tool_calls")):
            if not thought.endswith("\n"):
                out.write("\n")
            out.write("...done thinking.\n\n")
            opened, closed = False, True
        out.write(content)
        out.flush()
    if prompt:
        out.write("\n\n")


def cmd_version(client):
    """versionHandler: everything on stdout."""
    try:
        version = client.do("GET", "/api/version")["version"]
    except CliError:
        print("Warning: could not connect to a running Ollama instance")
        version = ""
    if version:
        print(f"ollama version is {version}")
    if version != VERSION:
        print(f"Warning: client version is {VERSION}")


def serve_parser():
    p = argparse.ArgumentParser(prog="ollama serve", description="Start ollama (the double)")
    p.add_argument(
        "--ready-after", type=float, default=env_number("OLLAMA_DOUBLE_READY_AFTER", float, 0.0)
    )
    p.add_argument(
        "--chunk-delay", type=float, default=env_number("OLLAMA_DOUBLE_CHUNK_DELAY", float, 0.0)
    )
    p.add_argument(
        "--hang-after", type=int, default=env_number("OLLAMA_DOUBLE_HANG_AFTER", int, None)
    )
    p.add_argument(
        "--cut-after", type=int, default=env_number("OLLAMA_DOUBLE_CUT_AFTER", int, None)
    )
    p.add_argument(
        "--malformed",
        action="store_true",
        default=os.environ.get("OLLAMA_DOUBLE_MALFORMED", "") not in ("", "0"),
    )
    p.add_argument("--fail-pulls", type=int, default=env_number("OLLAMA_DOUBLE_FAIL_PULLS", int, 0))
    return p


USAGE = """Large language model runner

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama
  run         Run a model
  stop        Stop a running model
  pull        Pull a model from a registry
  list        List models
  ps          List running models
  cp          Copy a model
  rm          Remove a model

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""

# command -> (least, most) positional arguments, and cobra's message when they do not fit
ARITY = {
    "list": (0, None),
    "ls": (0, None),
    "ps": (0, None),
    "pull": (1, 1),
    "rm": (1, None),
    "cp": (2, 2),
    "stop": (1, 1),
    "run": (1, None),
}
RUN_FLAGS = {"think", "hidethinking", "format", "keepalive", "verbose", "nowordwrap", "insecure"}


def split_flags(argv):
    """Positional arguments and --flags (`--name value`, `--name=value`, bare `--name`)."""
    positional, flags = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            if not sep and key in ("format", "keepalive") and i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            flags[key] = value
        else:
            positional.append(arg)
        i += 1
    return positional, flags


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("serve", "start"):
        return serve(serve_parser().parse_args(argv[1:]))
    client = Client()
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stderr.write(USAGE)
        return 0
    if argv[0] in ("-v", "--version"):
        cmd_version(client)
        return 0
    command, (args, flags) = argv[0], split_flags(argv[1:])
    try:
        if command not in ARITY:
            raise CliError(f'unknown command {go_quote(command)} for "ollama"')
        least, most = ARITY[command]
        if most == least and len(args) != least:
            raise CliError(f"accepts {least} arg(s), received {len(args)}")
        if len(args) < least:
            raise CliError(f"requires at least {least} arg(s), only received {len(args)}")
        unknown = set(flags) - (RUN_FLAGS if command == "run" else {"insecure"})
        if unknown:
            raise CliError(f"unknown flag: --{sorted(unknown)[0]}")
        client.heartbeat()
        if command in ("list", "ls"):
            cmd_list(client, args)
        elif command == "ps":
            cmd_ps(client, args)
        elif command == "pull":
            cmd_pull(client, args[0])
        elif command == "rm":
            cmd_rm(client, args)
        elif command == "cp":
            cmd_cp(client, *args)
        elif command == "stop":
            cmd_stop(client, args[0])
        else:
            cmd_run(client, args[0], args[1:], flags)
    except CliError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

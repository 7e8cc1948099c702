"""A test engine whose answers the guardrails tests control: Ollama's /api/chat plus the
OpenAI-compatible /v1/chat/completions that Ollama also serves (the rails' own calls go
there), stdlib only.

- A self-check prompt (the default config's prompts.yml wording) is answered "Yes" (block)
  when the text it judges contains BLOCK_ME, else "No".
- Any other chat is answered "You said: <last user message>", upper-cased when the message
  starts with "shout:", so a test decides what the answer (and so the output check) sees.
- A non-streamed /api/generate is answered "You said: <prompt>".
- Every request body is recorded; GET /_received returns them, DELETE /_received clears.

Run: python judge_engine.py PORT
"""

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = "BLOCK_ME"
SELF_CHECK = ("Should the user message below be blocked", "Should the assistant message below")

received: list[dict] = []
lock = threading.Lock()


def answer(messages: list[dict]) -> str:
    text = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
    if isinstance(text, list):  # OpenAI content parts
        text = " ".join(part.get("text", "") for part in text)
    if any(question in text for question in SELF_CHECK):
        return "Yes" if MARKER in text else "No"
    answer = f"You said: {text}"
    return answer.upper() if text.startswith("shout:") else answer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (aiohttp pools) would otherwise wait ~40 ms per request
    # on Nagle + delayed ACK, as a real engine on Go or uvicorn does not.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_received":
            with lock:
                self._send(200, json.dumps(received).encode())
        elif self.path == "/api/version":
            self._send(200, b'{"version": "0.12.3"}')
        elif self.path == "/v1/models":
            self._send(200, b'{"object": "list", "data": [{"id": "judge", "object": "model"}]}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_DELETE(self):
        with lock:
            received.clear()
        self._send(200, b"{}")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        with lock:
            received.append({"path": self.path, "body": body, "raw": raw.decode()})
        text = answer(body.get("messages", []))
        model = body.get("model", "judge")
        if self.path == "/v1/chat/completions":
            self._openai(model, text, body.get("stream", False))
        elif self.path == "/api/chat":
            self._ollama(model, text, body.get("stream", True))
        elif self.path == "/api/generate" and body.get("stream") is False:
            said = {"model": model, "response": f"You said: {body.get('prompt', '')}"}
            self._send(200, json.dumps({**said, "done": True, "done_reason": "stop"}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def _openai(self, model: str, text: str, stream: bool) -> None:
        base = {"id": "chatcmpl-judge", "created": int(time.time()), "model": model}
        if not stream:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            body = {**base, "object": "chat.completion", "choices": [choice]}
            self._send(200, json.dumps(body).encode())
            return
        events = [
            {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
            for piece in re.findall(r"\S+\s*", text)
        ]
        events.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        lines = [
            b"data: "
            + json.dumps({**base, "object": "chat.completion.chunk", "choices": [e]}).encode()
            + b"\n\n"
            for e in events
        ]
        self._send(200, b"".join([*lines, b"data: [DONE]\n\n"]), "text/event-stream")

    def _ollama(self, model: str, text: str, stream: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        last = {
            "model": model,
            "created_at": now,
            "done": True,
            "done_reason": "stop",
            "message": {"role": "assistant", "content": ""},
            "eval_count": 1,
        }
        if not stream:
            last["message"]["content"] = text
            self._send(200, json.dumps(last).encode())
            return
        parts = [
            {
                "model": model,
                "created_at": now,
                "done": False,
                "message": {"role": "assistant", "content": piece},
            }
            for piece in re.findall(r"\S+\s*", text)
        ]
        body = b"".join(json.dumps(p).encode() + b"\n" for p in [*parts, last])
        self._send(200, body, "application/x-ndjson")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

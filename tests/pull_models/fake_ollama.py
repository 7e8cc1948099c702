"""A scripted `ollama` CLI for pull-models.sh tests: only `list` and `pull`, with Ollama
0.12.3's texts (cmd/cmd.go, cmd/start_default.go): progress and errors on stderr, exit 1.

State lives in the directory named by FAKE_OLLAMA_DIR:
  down_calls   the first N calls fail as if the engine were not running (default 0)
  down_after   every call from the Nth on (counting from 0) fails the same way
  fail_pulls   lines "NAME COUNT": the first COUNT pulls of NAME fail
  models       the models present, one canonical name (name:tag) a line
  calls        every call, appended: "list", "pull NAME" or "down"
"""

import os
import re
import sys
from pathlib import Path

state = Path(os.environ["FAKE_OLLAMA_DIR"])
# What the server's model.ParseName accepts (types/model/name.go), roughly.
PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
VALID_NAME = re.compile(rf"^(?:{PART}(?::\d+)?/)?(?:{PART}/)?{PART}(?::{PART})?$")
NO_SERVER = (
    "Error: ollama server not responding - could not connect to ollama server, "
    "run 'ollama serve' to start it"
)


def read_lines(name: str) -> list[str]:
    path = state / name
    return path.read_text().split("\n")[:-1] if path.exists() else []


def record(call: str) -> None:
    with (state / "calls").open("a") as f:
        f.write(call + "\n")


def main(argv: list[str]) -> int:
    calls = read_lines("calls")
    down = int((state / "down_calls").read_text()) if (state / "down_calls").exists() else 0
    gone = (state / "down_after").exists() and len(calls) >= int((state / "down_after").read_text())
    if len(calls) < down or gone:
        record("down")
        print(NO_SERVER, file=sys.stderr)
        return 1
    models = read_lines("models")
    if argv == ["list"]:
        record("list")
        print(f"{'NAME':<32}{'ID':<16}{'SIZE':<10}MODIFIED")
        for name in models:
            print(f"{name:<32}{'a80c4f17acd5':<16}{'2.0 GB':<10}2 weeks ago")
        return 0
    if len(argv) == 2 and argv[0] == "pull":
        name = argv[1] if ":" in argv[1].rsplit("/", 1)[-1] else argv[1] + ":latest"
        record(f"pull {argv[1]}")
        if not VALID_NAME.match(argv[1]):
            print("Error: 400 Bad Request: invalid model name", file=sys.stderr)
            return 1
        failures = dict(line.split() for line in read_lines("fail_pulls"))
        failed_before = calls.count(f"pull {argv[1]}")
        if failed_before < int(failures.get(argv[1], 0)):
            print("pulling manifest", file=sys.stderr)
            print("Error: pull model manifest: file does not exist", file=sys.stderr)
            return 1
        if name not in models:
            with (state / "models").open("a") as f:
                f.write(name + "\n")
        print("pulling manifest\nsuccess", file=sys.stderr)
        return 0
    print(f"fake ollama: unexpected arguments {argv}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

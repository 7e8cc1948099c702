"""The Ollama double's docstring is its contract: every behaviour it lists as reproduced names
the Ollama 0.12.3 source it was read in, and every error text it quotes is asserted by a test
of this directory."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support.engines import OLLAMA_DOUBLE

HERE = Path(__file__).parent
# Files of Ollama v0.12.3 (and of the gin-contrib/cors version it pins) the double was read in.
SOURCES = {
    "api/types.go",
    "cmd/cmd.go",
    "cmd/start_default.go",
    "envconfig/config.go",
    "gin-contrib/cors",
    "llm/server.go",
    "openai/openai.go",
    "server/create.go",
    "server/download.go",
    "server/images.go",
    "server/layer.go",
    "server/manifest.go",
    "server/modelpath.go",
    "server/routes.go",
    "thinking/template.go",
}


def reproduced() -> list[str]:
    """The bullets of the docstring's "Reproduced:" section, each joined into one line."""
    doc = ast.get_docstring(ast.parse(Path(OLLAMA_DOUBLE).read_text()))
    section = doc.split("Reproduced:", 1)[1].split("Not reproduced:", 1)[0]
    return [" ".join(b.split()) for b in re.split(r"\n- ", "\n" + section.strip()) if b.strip()]


def cited(bullet: str) -> set[str]:
    files = set()
    for group in re.findall(r"\[([^\]]+)\]", bullet):
        for word in re.findall(r"[\w./-]+\.go|gin-contrib/cors", group):
            files.add(word if "/" in word else f"server/{word}")
    return files


def test_every_reproduced_behaviour_cites_ollamas_source():
    bullets = reproduced()
    assert len(bullets) >= 8
    for bullet in bullets:
        files = cited(bullet)
        assert files, f"no source cited: {bullet[:80]}"
        assert files <= SOURCES, f"unknown source {files - SOURCES}: {bullet[:80]}"


def test_every_quoted_error_text_is_asserted_by_a_test():
    tests = "\n".join(p.read_text() for p in HERE.glob("test_ollama_double*.py"))
    # compare with Python's quote escapes undone and adjacent string literals joined
    tests = tests.replace('\\"', '"').replace("\\'", "'")
    tests = re.sub(r"(['\"])\s*\n\s*\1", "", tests)
    quoted = [
        text
        for bullet in reproduced()
        for _, text in re.findall(r"\b([1-5]\d\d) `([^`]+)`", bullet)
    ]
    quoted += [t for b in reproduced() for t in re.findall(r"`(Error: [^`]+)`", b)]
    assert len(quoted) >= 15
    for text in quoted:
        # X and <...> stand for a name; "..." for the rest of a message; lines may wrap
        parts = re.split(r"(?<![A-Za-z])X(?![A-Za-z])|<[^>]+>|\.\.\.", text)
        pattern = ".+?".join(re.escape(part) for part in parts).replace(r"\ ", r"\s+")
        assert re.search(pattern, tests), f"no test asserts {text!r}"

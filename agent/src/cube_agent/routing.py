"""Routing rules: which engine a request goes to.

The routes file (YAML) lists rules; the highest `priority` wins, ties keep file order, and
the implicit last rule sends everything else to UV_CUBE_AGENT_TARGET_URL::

    rules:
      - name: tiny-on-llama            # unique, shown in errors and at /admin/routes
        priority: 10                   # optional, default 0
        match:                         # every condition given must hold; all are regexes
          path: ^/v1/chat/completions$ # searched in the path without the /{domain} prefix
          methods: [POST]
          domain: ^team-a$
          headers: {x-team: ^blue$}
          query: {variant: ^b$}
          body: {model: ^tiny}         # top-level JSON field of the request body
        target: http://127.0.0.1:8080  # may carry a base path
        engine: openai                 # auto (default), ollama, openai
        strip_prefix: /engine-b        # removed from the path before it is forwarded

The body is parsed only when a rule that is otherwise matching has a `body` condition.

The regexes run on client input, on the event loop. A pattern without repetition (`^/api/`,
`^team-a$`, `^tiny`: most rules) cannot backtrack badly and runs on `re`. Any other runs on
the `regex` module (Buildroot's python-regex), whose matching takes a timeout, so a pattern
that backtracks badly on some input costs a bounded time per condition (MATCH_TIMEOUT; the
module checks it coarsely: about 5x that, measured) instead of freezing the agent. Input is
bounded too (MAX_MATCH_CHARS). Either limit refuses the request (400): a request that
cannot be routed by the rules is not sent to some other engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .config import ConfigError, Settings

if TYPE_CHECKING:
    import regex
from .errors import AgentError
from .paths import PathError, canonical_path, drop_segments
from .upstream import Upstream

# A condition gives up after this long (s) or on a longer value, and the request is refused.
MATCH_TIMEOUT = 0.02
MAX_MATCH_CHARS = 4096


class _Linear:
    """A pattern without repetition, on `re` (linear in the input; the timeout `regex`
    needs costs ~10 us a search, more than the match)."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern


Search = Callable[[str], object]


def _searcher(value: str) -> Search:
    """The search a condition runs: `re`'s own for a pattern without repetition (no
    wrapper: it runs on every request), `regex`'s with the timeout for any other."""
    pattern = _regex(value)
    if isinstance(pattern, _Linear):
        return pattern.pattern.search
    return partial(pattern.search, timeout=MATCH_TIMEOUT)


_UNSAFE_OPS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT", "GROUPREF", "GROUPREF_EXISTS"}


def _repeats(parsed: object) -> bool:
    """Whether a parsed `re` pattern has any repetition or back-reference (conservative:
    anything not understood counts as one)."""
    try:
        for op, av in parsed:  # type: ignore[attr-defined]
            if str(op) in _UNSAFE_OPS:
                return True
            items = av if isinstance(av, (list, tuple)) else (av,)
            for item in items:
                if isinstance(item, re._parser.SubPattern) and _repeats(item):  # type: ignore[attr-defined]
                    return True
                if isinstance(item, list) and any(
                    isinstance(b, re._parser.SubPattern) and _repeats(b)  # type: ignore[attr-defined]
                    for b in item
                ):
                    return True
    except Exception:
        return True
    return False


def _regex(value: str) -> regex.Pattern[str] | _Linear:
    try:
        if not _repeats(re._parser.parse(value)):  # type: ignore[attr-defined]
            return _Linear(re.compile(value))
    except (re.error, AttributeError):
        pass
    # Only patterns that can backtrack need regex's timeout; importing it costs ~3 MB of
    # idle RSS, so an agent without such rules never does.
    import regex

    try:
        return regex.compile(value)
    except regex.error as exc:
        raise ValueError(f"invalid regex {value!r}: {exc}") from None


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    methods: list[str] | None = None
    domain: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, str] = Field(default_factory=dict)

    @field_validator("path", "domain")
    @classmethod
    def _one_regex(cls, value: str | None) -> str | None:
        if value is not None:
            _regex(value)
        return value

    @field_validator("headers", "query", "body")
    @classmethod
    def _many_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            _regex(str(pattern))
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str] | None) -> list[str] | None:
        return [m.upper() for m in value] if value is not None else None


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    priority: int = 0
    match: _Match = Field(default_factory=_Match)
    target: AnyHttpUrl
    engine: Literal["auto", "ollama", "openai"] = "auto"
    strip_prefix: str = ""

    @field_validator("target", mode="before")
    @classmethod
    def _base_path(cls, value: object) -> object:
        # The base path is prefixed to every forwarded path: canonical itself, as written
        # (before URL parsing resolves any "..").
        if isinstance(value, str):
            check_base_url(value)
        return value

    @field_validator("strip_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value:
            _canonical(value, "strip_prefix")
            if "%" in value or value == "/":
                raise ValueError("strip_prefix is whole path segments (/a/b), without escapes")
        return value


def check_base_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError("an engine URL has no query or fragment")
    base = parts.path.rstrip("/")
    if base:
        _canonical(base, "the engine URL's path")


def _canonical(path: str, what: str) -> None:
    try:
        canonical_path(path.encode("ascii"))
    except (UnicodeEncodeError, PathError) as exc:
        raise ValueError(f"{what} {path!r} is not a canonical path: {exc}") from None


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[dict[str, Any]] = Field(default_factory=list)


@dataclass
class Rule:
    """A validated rule with its regexes compiled once, each as the search it runs."""

    name: str
    priority: int
    upstream: Upstream
    strip_prefix: str
    spec: dict[str, Any]
    path: Search | None
    methods: frozenset[str] | None
    domain: Search | None
    headers: tuple[tuple[str, Search], ...]
    query: tuple[tuple[str, Search], ...]
    body: tuple[tuple[str, Search], ...]

    def _search(self, search: Search, value: str, what: str) -> bool:
        if len(value) > MAX_MATCH_CHARS:
            raise AgentError(
                400,
                f"routing rule {self.name!r}: the request's {what} is longer than "
                f"{MAX_MATCH_CHARS} characters",
                "unroutable",
            )
        try:
            return search(value) is not None
        except TimeoutError:
            raise AgentError(
                400,
                f"routing rule {self.name!r}: matching the request's {what} took too long",
                "unroutable",
            ) from None

    def matches_request_line(
        self,
        method: str,
        path: str,
        domain: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path is not None and not self._search(self.path, path, "path"):
            return False
        if self.domain is not None and not self._search(self.domain, domain, "domain"):
            return False
        for name, pattern in self.headers:
            value = headers.get(name)
            if value is None or not self._search(pattern, value, f"header {name}"):
                return False
        for name, pattern in self.query:
            value = query.get(name)
            if value is None or not self._search(pattern, value, f"query {name}"):
                return False
        return True

    def matches_body(self, body: Any) -> bool:
        if not isinstance(body, dict):
            return False
        for name, pattern in self.body:
            value = body.get(name)
            if value is None:
                return False
            text = value if isinstance(value, str) else str(value)
            if not self._search(pattern, text, f"body field {name}"):
                return False
        return True

    def forward_path(self, path: str, raw: str | None = None) -> str:
        """The raw path to send: `strip_prefix` removed when it is whole leading segments
        of `path` (so /v1 never strips /v1x), never anything else (paths.py)."""
        raw = path if raw is None else raw
        prefix = self.strip_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return drop_segments(raw, prefix.count("/"))
        return raw


class Router:
    """Picks the upstream for a request; owns every Upstream (one per distinct target)."""

    def __init__(self, settings: Settings, rules_spec: list[dict[str, Any]] | None = None) -> None:
        self._settings = settings
        self.upstreams: dict[str, Upstream] = {}
        self.default = self._upstream(settings.target, settings.engine)
        self.rules: list[Rule] = []
        for index, raw in enumerate(rules_spec or []):
            self.rules.append(self._compile(index, raw))
        self.rules.sort(key=lambda r: -r.priority)  # stable: ties keep file order
        self.needs_body = any(r.body for r in self.rules)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        if settings.routes_file is None:
            return cls(settings)
        where = settings.routes_file
        try:
            data = yaml.safe_load(where.read_text()) or {}
            rules = _RoutesFile.model_validate(data).rules
        except OSError as exc:
            raise ConfigError(f"UV_CUBE_AGENT_ROUTES_FILE={where}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not YAML: {str(exc).splitlines()[0]}") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}: {loc}: {err['msg']}") from None
        return cls(settings, rules)

    def _upstream(self, url: str, engine: str) -> Upstream:
        url = url.rstrip("/")
        existing = self.upstreams.get(url)
        if existing is not None:
            if engine != "auto" and existing.configured not in ("auto", engine):
                raise ConfigError(
                    f"target {url} is declared both {existing.configured} and {engine}"
                )
            if engine != "auto":
                existing.configured = engine
                existing.kind = engine  # type: ignore[assignment]
            return existing
        s = self._settings
        upstream = Upstream(
            url, engine, s.connect_timeout, s.read_timeout, s.total_timeout, s.max_concurrency
        )
        self.upstreams[url] = upstream
        return upstream

    def _compile(self, index: int, raw: dict[str, Any]) -> Rule:
        label = f"rule #{index + 1}" + (
            f" ({raw['name']!r})" if isinstance(raw, dict) and "name" in raw else ""
        )
        where = self._settings.routes_file
        try:
            spec = _RuleSpec.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "rule"
            raise ConfigError(f"{where}: {label}: {loc}: {err['msg']}") from None
        if any(r.name == spec.name for r in self.rules):
            raise ConfigError(f"{where}: {label}: name: duplicate rule name")
        m = spec.match
        return Rule(
            name=spec.name,
            priority=spec.priority,
            upstream=self._upstream(str(spec.target), spec.engine),
            strip_prefix=spec.strip_prefix,
            spec=spec.model_dump(mode="json"),
            path=_searcher(m.path) if m.path is not None else None,
            methods=frozenset(m.methods) if m.methods is not None else None,
            domain=_searcher(m.domain) if m.domain is not None else None,
            headers=tuple((k.lower(), _searcher(v)) for k, v in m.headers.items()),
            query=tuple((k, _searcher(v)) for k, v in m.query.items()),
            body=tuple((k, _searcher(str(v))) for k, v in m.body.items()),
        )

    def route(
        self,
        method: str,
        path: str,
        domain: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        body: Callable[[], Any],
        raw: str | None = None,
    ) -> tuple[Upstream, str, str | None]:
        """Return (upstream, raw path to forward, rule name or None for the default).
        Rules match the decoded `path`; `raw` is its form as sent (default: the same)."""
        for rule in self.rules:
            if rule.matches_request_line(method, path, domain, headers, query) and (
                not rule.body or rule.matches_body(body())
            ):
                return rule.upstream, rule.forward_path(path, raw), rule.name
        return self.default, path if raw is None else raw, None

    def describe(self) -> dict[str, Any]:
        return {
            "rules": [{**r.spec, "engine_detected": r.upstream.kind} for r in self.rules],
            "default": {
                "target": self.default.url,
                "engine": self.default.configured,
                "engine_detected": self.default.kind,
            },
        }

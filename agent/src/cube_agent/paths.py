"""One canonical path per request: what auth, the admin check, the endpoint allow-list,
routing and guardrails decide on, and what the engine is sent.

The agent is the only door to the engine, so a path must mean the same thing to the agent,
to the HTTP client library that forwards it, and to the engine. A path is accepted only
when it has exactly one meaning; everything else is refused with 400 before any decision:

- segments are non-empty (no `//`, no trailing `/`) and are not `.` or `..`;
- raw characters are RFC 3986 path characters that no server treats specially: letters,
  digits, ``-._~`` and ``!$&'()*+,=:@`` (no `;`: some servers cut path parameters);
- percent escapes are allowed only for ``!$&'()*+,=:@`` (a client may escape them; they
  mean the same escaped or not). Every other escape is refused: escapes of unreserved
  characters (`%2e` is `.`, `%61` is `a`) are undone by normalisation, `%2F` `%3F` `%23`
  `%5C` `%25` `%3B` and control bytes change the path's structure for some server.

So the decoded path (the one decisions are made on) has the same segments as the raw one,
and decoding it again changes nothing. The engine gets the raw, checked path, unchanged
(`yarl.URL(..., encoded=True)`: never re-normalised on the way out).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

# A segment: allowed characters or allowed escapes, and not "." or "..".
_SEGMENT = (
    rb"(?!\.\.?(?:/|\Z))"
    rb"(?:[A-Za-z0-9._~!$&'()*+,=:@-]|%(?:2[1246-9A-Ca-c]|3[ADad]|40))+"
)
RAW_PATH = re.compile(rb"/|(?:/" + _SEGMENT + rb")+")
# The query is forwarded as sent: RFC 3986 query characters and well-formed escapes only
# (no `#`, no `;` that some parsers take as a separator, no blanks or control bytes).
RAW_QUERY = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,=:@/?-]|%[0-9A-Fa-f]{2})*")


class PathError(ValueError):
    """A path or query with more than one possible meaning (the message says why)."""


@lru_cache(maxsize=1024)
def canonical_path(raw: bytes) -> str:
    """The request path decided on and forwarded, from the raw bytes the client sent.
    Cached: clients send the same few paths (a refused one raises and is never cached)."""
    if RAW_PATH.fullmatch(raw) is None:
        raise PathError(_why(raw))
    text = raw.decode("ascii")
    return unquote(text) if "%" in text else text


def check_query(raw: bytes) -> str:
    if not raw:
        return ""
    if RAW_QUERY.fullmatch(raw) is None:
        raise PathError("the query string has characters or escapes that are not allowed")
    return raw.decode("ascii")


def drop_segments(raw: str, count: int) -> str:
    """`raw` without its first `count` segments ("/" if none is left); segments of the raw
    and the decoded path correspond one to one (no escaped `/`)."""
    if count <= 0:
        return raw
    parts = raw.split("/", count + 1)
    return "/" + parts[count + 1] if len(parts) > count + 1 else "/"


def _why(raw: bytes) -> str:
    if not raw.startswith(b"/"):
        return "the path must start with /"
    segments = raw[1:].split(b"/")
    if any(not s for s in segments):
        return "empty path segment (// or a trailing /)"
    for segment in segments:
        if segment in (b".", b".."):
            return "dot segments (. or ..) are not allowed in the path"
        if b"%" in segment:
            for escape in re.findall(rb"%(..?)", segment):
                if re.fullmatch(rb"2[1246-9A-Ca-c]|3[ADad]|40", escape) is None:
                    return f"percent escape %{escape.decode('latin-1')} is not allowed in the path"
    return "characters that are not allowed in the path (only letters, digits and -._~!$&'()*+,=:@)"

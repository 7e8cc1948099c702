"""Who may call what: `Authorization: Bearer <key>` checked against the key file."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers

from .errors import AgentError
from .keys import Key, KeyFile

log = logging.getLogger("cube_agent.auth")


class Auth:
    """`keys` is None when auth is off (UV_CUBE_AGENT_AUTH=off): every request is allowed."""

    def __init__(self, keys: KeyFile | None) -> None:
        self.keys = keys

    def check(self, headers: Headers, domain: str | None, admin: bool = False) -> Key | None:
        """Raise 401/403 unless the key may use `domain` (None: any valid key will do)."""
        if self.keys is None:
            return None
        header = headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AgentError(
                401, "missing API key: send Authorization: Bearer <key>", "missing_key"
            )
        self.keys.reload_if_changed()
        key = self.keys.find(presented.strip())
        if key is None:
            raise AgentError(401, "invalid API key", "invalid_key")
        if admin and not key.admin:
            raise AgentError(403, f"key {key.name!r} is not an admin key", "admin_required")
        if domain is not None and not key.allows(domain):
            raise AgentError(
                403, f"key {key.name!r} is not granted domain {domain!r}", "domain_forbidden"
            )
        return key

"""Settings: the UV_CUBE_AGENT_* environment, validated once at start-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "UV_CUBE_AGENT_"


class ConfigError(Exception):
    """A setting the agent cannot start with; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    target_url: AnyHttpUrl = AnyHttpUrl("http://localhost:11434")
    engine: Literal["auto", "ollama", "openai"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(7001, ge=1, le=65535)
    # uvicorn worker processes; metrics are summed over them (Prometheus multiprocess mode)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    key_file: Path = Path("/etc/cube/agent/keys.json")
    auth: bool = True
    routes_file: Path | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)
    total_timeout: float = Field(600.0, gt=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # What one client may cost before and after its key is checked (server.py, proxy.py).
    max_head_bytes: int = Field(64 * 1024, ge=1024)
    header_timeout: float = Field(10.0, gt=0)
    keepalive_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(1024, ge=1)
    max_concurrency: int = Field(256, ge=1)
    max_key_concurrency: int = Field(128, ge=1)
    max_buffered_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_answer_bytes: int = Field(32 * 1024 * 1024, gt=0)
    guardrails_config: Path | None = None
    # configfs-tsm report directory for POST /attestation (attestation.py, issue 6)
    tsm_root: Path = Path("/sys/kernel/config/tsm/report")
    # TLS (tls.py, issue 16). auto: HTTPS unless the listener is on the loopback. The key
    # is made in memory at start-up unless a certificate and its key are given.
    tls: Literal["auto", "on", "off"] = "auto"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # A second, plain-HTTP listener for programs inside the guest (loopback only).
    plain_host: str = "127.0.0.1"
    plain_port: int | None = Field(None, ge=1, le=65535)
    # Plain HTTP off the loopback: only for a sandbox on a trusted host (logged as a warning).
    insecure_plain_http: bool = False
    # Browser origins allowed besides localhost's (browser.py): Ollama's OLLAMA_ORIGINS.
    origins: str = ""

    @field_validator("target_url", mode="before")
    @classmethod
    def _target_base_path(cls, value: object) -> object:
        # Prefixed to every forwarded path: canonical itself (paths.py), as written.
        if isinstance(value, str):
            from .routing import check_base_url

            check_base_url(value)
        return value

    @field_validator("log_level", "engine", "tls", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("auth", "insecure_plain_http", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        # The contract spells it on/off; pydantic also takes true/false/1/0.
        return {"on": True, "off": False}.get(value, value) if isinstance(value, str) else value

    @field_validator(
        "routes_file",
        "guardrails_config",
        "tls_cert_file",
        "tls_key_file",
        "plain_port",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        from .browser import Origins

        Origins(value)  # raises ValueError naming the bad origin
        return value

    @model_validator(mode="after")
    def _listeners(self) -> Settings:
        # Errors name the variable first ("tls: ..."): load_settings prints it as the setting.
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file: give both UV_CUBE_AGENT_TLS_CERT_FILE and _KEY_FILE")
        if not self.serves_tls:
            if not is_loopback(self.host) and not self.insecure_plain_http:
                raise ValueError(
                    f"tls: off would serve plain HTTP on {self.host}, off the loopback: turn "
                    "TLS on, or set UV_CUBE_AGENT_INSECURE_PLAIN_HTTP=on (sandbox only)"
                )
            if self.plain_port is not None:
                raise ValueError("plain_port: the main listener is plain HTTP already (TLS off)")
        plain_off_loopback = self.plain_port is not None and not is_loopback(self.plain_host)
        if plain_off_loopback and not self.insecure_plain_http:
            raise ValueError(
                f"plain_host: {self.plain_host} is not a loopback address; plain HTTP "
                "stays inside the guest (UV_CUBE_AGENT_INSECURE_PLAIN_HTTP=on: sandbox only)"
            )
        return self

    @property
    def serves_tls(self) -> bool:
        return self.tls == "on" or (self.tls == "auto" and not is_loopback(self.host))

    @property
    def target(self) -> str:
        return str(self.target_url).rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's report into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a check across settings (_listeners): "field: message"
            field, _, message = str(err["msg"]).removeprefix("Value error, ").partition(": ")
            raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {message}") from None
        field = str(err["loc"][0])
        value = err.get("input")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}={value!s}: {err['msg']}") from None

"""Settings: the UV_CUBE_AGENT_* environment, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator
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
    guardrails_config: Path | None = None
    # configfs-tsm report directory for POST /attestation (attestation.py, issue 6)
    tsm_root: Path = Path("/sys/kernel/config/tsm/report")

    @field_validator("log_level", "engine", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("auth", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        # The contract spells it on/off; pydantic also takes true/false/1/0.
        return {"on": True, "off": False}.get(value, value) if isinstance(value, str) else value

    @field_validator("routes_file", "guardrails_config", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def target(self) -> str:
        return str(self.target_url).rstrip("/")


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's report into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        value = err.get("input")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}={value!s}: {err['msg']}") from None

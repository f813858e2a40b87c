"""Settings, read once from the environment (and `.env`) in `__main__` and handed down.

A missing or malformed setting ends the process with one line naming it, and so does a name in `.env` that is
not a setting (a typo there would otherwise leave its setting at the default without a word). The process's
environment is not checked that way: it holds PATH and everything else. Secrets are `SecretStr`, so they never
show up in a repr, a log line or an error message.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import ConfigError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    # extra="forbid" rejects unknown names in `.env` only: the environment source reads just the settings' names.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="forbid", frozen=True)

    # Discord
    discord_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_shard_count: int | None = Field(default=None, ge=1)
    discord_shard_ids: str | None = None

    # Storage and runtime
    database_url: str = "sqlite:///data/videobot.db"
    data_dir: Path = Path("data")
    default_model: str | None = None
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    """`json`: one JSON object a line, for log shippers."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve Prometheus metrics and /healthz on METRICS_HOST:METRICS_PORT (unset: off)."""
    metrics_host: str = "127.0.0.1"
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    """Jobs one worker process drives at once."""
    global_concurrency: int | None = Field(default=None, ge=1)
    """Jobs running at once across every worker sharing the database (unset: no cap beyond each worker's)."""
    lease_seconds: float = Field(default=60.0, ge=5.0)
    """How long a worker's claim on a job lasts without renewal; a dead worker's jobs are taken over after it."""
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest image accepted for image-to-video."""

    models_file: Path | None = None
    """A TOML file that overrides the built-in model catalogue (weights, prices, durations, labels, aliases)."""
    max_download_bytes: int = Field(default=500_000_000, ge=1_000_000)
    """Largest finished video fetched from a provider; streamed to DATA_DIR, never held in memory."""

    # Providers (each vendor's own variable names)
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    fal_key: SecretStr | None = None
    fal_base_url: str = "https://queue.fal.run"
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str = "https://api.replicate.com"
    comfyui_url: str | None = None
    comfyui_workflow: Path | None = None
    dashscope_api_key: SecretStr | None = None
    dashscope_base_url: str = "https://dashscope-intl.aliyuncs.com/api/v1"
    runwayml_api_secret: SecretStr | None = None
    runwayml_base_url: str = "https://api.dev.runwayml.com"
    lumaai_api_key: SecretStr | None = None
    lumaai_base_url: str = "https://api.lumalabs.ai/dream-machine/v1"
    kling_access_key: SecretStr | None = None
    kling_secret_key: SecretStr | None = None
    kling_base_url: str = "https://api-singapore.klingai.com"
    minimax_api_key: SecretStr | None = None
    minimax_base_url: str = "https://api.minimax.io"
    vidu_api_key: SecretStr | None = None
    vidu_base_url: str = "https://api.vidu.com/ent/v2"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("discord_api_base", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must be an http(s):// or ws(s):// URL")
        return value.rstrip("/") if value.startswith("http") else value

    @field_validator("discord_shard_ids")
    @classmethod
    def _shard_ids(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            try:
                ids = [int(part) for part in value.split(",")]
            except ValueError:
                raise ValueError("must be a comma list of shard numbers, e.g. 0,1,2") from None
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ValueError(f"lists shard {', '.join(map(str, repeated))} more than once")
        return value if value and value.strip() else None

    @model_validator(mode="after")
    def _shards_within_count(self) -> Settings:
        ids = self.shard_ids
        if ids is None:
            return self
        count = self.discord_shard_count
        if count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards)")
        outside = [i for i in ids if not 0 <= i < count]
        if outside:
            raise ValueError(
                f"DISCORD_SHARD_IDS must be from 0 to {count - 1} (DISCORD_SHARD_COUNT is {count}); "
                f"{', '.join(map(str, outside))} {'is' if len(outside) == 1 else 'are'} not"
            )
        return self

    @property
    def gateway_shard_ids(self) -> list[int] | None:
        """The shards this gateway process runs: DISCORD_SHARD_IDS, else all of DISCORD_SHARD_COUNT; None
        without sharding (Discord then sends every server to the one connection)."""
        if self.discord_shard_count is None:
            return None
        return self.shard_ids or list(range(self.discord_shard_count))

    @property
    def shard_ids(self) -> list[int] | None:
        return [int(part) for part in self.discord_shard_ids.split(",")] if self.discord_shard_ids else None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's report into one line that names the first bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
        if unknown:
            raise ConfigError(_unknown_names(unknown, overrides)) from None
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            raise ConfigError(f"settings are invalid: {message}") from None
        raise ConfigError(f"setting {str(error['loc'][0]).upper()} is invalid: {message}") from None


def _unknown_names(names: list[str], overrides: dict[str, object]) -> str:
    """One line naming each unknown name, with the setting it most resembles (DATA_DR: did you mean DATA_DIR?)."""
    known = [name.upper() for name in Settings.model_fields]
    where = str(overrides.get("_env_file", ".env"))
    parts = []
    for name in names:
        source = "given" if name in overrides else f"in {where}"
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else " (remove it, or fix its name: .env.example lists them all)"
        parts.append(f"{name.upper()} {source} is not a setting{hint}")
    return "; ".join(parts)

"""The limits and switches of ``metastore serve``, each named with its help text.

Every limit a handler applies is a setting here, never a constant in the
handler (after Datasette's ``SETTINGS`` table). ``Settings()`` holds the
defaults; ``Settings.from_mapping`` takes overrides by name and checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from metastore.errors import ConfigurationError


@dataclass(frozen=True)
class Setting:
    """One setting: its name, default and help text."""

    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "max_limit",
        1000,
        "most rows a QIDO-RS answer (or studies a /dicomjson answer) holds; more is capped, "
        "with a Warning: 299 header",
    ),
    Setting("token", None, "bearer token every request must carry (None: no authentication)"),
    Setting("cors_origins", (), "origins allowed to call the service from a browser (CORS)"),
    Setting("public_url", None, "the URL clients reach the service at (default: from the request)"),
    Setting(
        "upstream_connect_timeout", 5.0, "seconds to wait for the archive to accept a connection"
    ),
    Setting(
        "upstream_timeout", 30.0, "seconds to wait for the archive's answer (or its next bytes)"
    ),
    Setting("max_wait", 30.0, "longest long-poll wait of /changefeed, in seconds"),
    Setting("changefeed_max_limit", 1000, "most events one /changefeed answer holds"),
    Setting("poll_interval", 0.2, "seconds between looks at the change feed (SQLite)"),
    Setting("gzip_min_size", 1024, "smallest JSON answer compressed for a client accepting gzip"),
)


_D: dict[str, Any] = {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The service's settings; see ``SETTINGS`` for what each one means."""

    max_limit: int = _D["max_limit"]
    token: str | None = field(default=_D["token"], repr=False)
    cors_origins: tuple[str, ...] = _D["cors_origins"]
    public_url: str | None = _D["public_url"]
    upstream_connect_timeout: float = _D["upstream_connect_timeout"]
    upstream_timeout: float = _D["upstream_timeout"]
    max_wait: float = _D["max_wait"]
    changefeed_max_limit: int = _D["changefeed_max_limit"]
    poll_interval: float = _D["poll_interval"]
    gzip_min_size: int = _D["gzip_min_size"]

    def __post_init__(self) -> None:
        for name in ("max_limit", "changefeed_max_limit"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"setting {name} must be at least 1")
        for name in ("upstream_connect_timeout", "upstream_timeout", "poll_interval"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"setting {name} must be more than 0")
        if self.max_wait < 0 or self.gzip_min_size < 0:
            raise ConfigurationError("settings max_wait and gzip_min_size must not be negative")
        if self.token is not None and not self.token.strip():
            raise ConfigurationError("setting token must not be empty")
        if self.public_url is not None:
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Defaults overridden by ``values`` (by setting name); an unknown name is an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return replace(cls(), **dict(values))


def describe() -> str:
    """The settings with their defaults and help, one per line (for ``--help`` and docs)."""
    return "\n".join(f"{s.name} [{s.default!r}]: {s.help}" for s in SETTINGS)

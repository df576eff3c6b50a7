"""Gateway settings: one class, read from `GATEWAY_*` environment variables and `.env`."""

from __future__ import annotations

import hmac
from functools import cached_property
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "your-key-here", "xxx"})
DEMO_UPSTREAM_KEY = "sim-master-key-demo-only"


class Settings(BaseSettings):
    """Every tunable of the gateway; `.env.example` documents each one."""

    # An empty variable means unset, so `.env.example` copied verbatim is a valid configuration.
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # Upstream (Seedance / Ark). No key means demo mode against the built-in simulator.
    upstream_base_url: str = "http://127.0.0.1:8001/api/v3"
    upstream_api_key: SecretStr | None = None
    # Encrypts the master keys of accounts added through the admin API (any long random text;
    # without it only the settings' account can be used). Changing it makes stored keys unusable.
    account_keys_secret: SecretStr | None = None
    upstream_timeout_seconds: float = 60.0
    upstream_connect_timeout_seconds: float = 5.0
    upstream_max_connections: int = 100

    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    database_pool_size: int = Field(default=20, ge=1)
    # Longest wait for a connection or a statement; past it the client gets 503 with Retry-After.
    database_timeout_seconds: float = Field(default=10.0, gt=0)
    redis_url: str | None = None
    admin_token: SecretStr | None = None

    # Public API behaviour. Aliases map endpoint ids (`ep-…`) to the model they serve.
    model_aliases: dict[str, str] = Field(default_factory=dict)
    max_body_bytes: int = 10 * 1024 * 1024
    # A request body must arrive within this many seconds (408 after); headers within the size cap.
    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096)
    refresh_stale_seconds: float = 3.0
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)
    key_last_used_resolution_seconds: float = 60.0

    # Background poller: settles tasks nobody polls, reconciles unknown creates, expires stale ones.
    poller_enabled: bool = True
    # On SIGTERM: how long in-flight requests may take to finish before they are cut (keep it
    # under the orchestrator's termination grace period).
    shutdown_grace_seconds: int = Field(default=25, ge=1, le=3600)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    poll_batch_size: int = Field(default=100, ge=1)
    poll_lease_seconds: float = Field(default=60.0, gt=0)
    upstream_poll_qps: float = Field(default=8.0, gt=0)
    # Each succeeded task's usage is read once more this long after it settled, for the
    # reconciliation report.
    usage_reread_seconds: float = Field(default=600.0, ge=0)

    # Limits. Rates use the `limits` notation ("60/minute", "10/second;500/hour"), per key, in a
    # moving window: in Redis when GATEWAY_REDIS_URL is set, else in this process only.
    create_rate_limit: str = "60/minute"
    read_rate_limit: str = "1200/minute"
    # Upstream refreshes that client retrieves may cause, for the whole account (shared through
    # Redis when set). With the poller's 8/s it makes 17, under the upstream's 20 retrieves/s
    # with room for calls that arrive bunched (a busy machine delays some, then sends them
    # together); past it, a retrieve answers from the stored copy instead of calling upstream.
    upstream_refresh_rate: str = "9/second"
    max_tasks_in_flight_per_key: int = Field(default=20, ge=0)
    max_tasks_in_flight_per_user: int = Field(default=50, ge=0)
    # Open tasks across all users; keep it under the account's 120 queued tasks upstream.
    max_tasks_in_flight_global: int = Field(default=100, ge=0)
    # The gateway's create queue: how many creates may wait for an account with room (0: off,
    # a create is refused when every account is full), and how long one may wait.
    create_queue_size: int = Field(default=0, ge=0, le=100_000)
    create_queue_timeout_seconds: float = Field(default=600.0, gt=0)
    in_flight_retry_after_seconds: int = Field(default=10, ge=1)
    auth_failure_limit: str = "20/minute"
    # Client addresses (or CIDR ranges) of proxies whose X-Forwarded-For is believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    redis_key_prefix: str = "sgw"
    redis_timeout_seconds: float = Field(default=1.0, gt=0)

    # Client callbacks (`callback_url`): how long a receiver has to acknowledge with a 2xx.
    callback_timeout_seconds: float = Field(default=5.0, gt=0)
    # Callbacks reach public addresses only; these networks (CIDRs) are allowed besides.
    callback_allowed_networks: list[str] = Field(default_factory=list)

    # Browser front ends. Origins (exact, e.g. https://app.example.com) whose pages may call the
    # API; none by default. Browser tokens are signed with the first secret and checked with
    # each (rotate: put a new one first, drop the old one after an hour); unset, a secret
    # derived from the admin token signs them, and without that, browser tokens are off.
    cors_origins: list[str] = Field(default_factory=list)
    browser_token_secrets: list[SecretStr] = Field(default_factory=list)

    # Archive: finished videos (and last frames) copied into storage of the gateway's own before
    # the upstream's links expire (24 h), served from there. Off when unset; `file:///dir` or
    # `s3://bucket/prefix` (endpoint and credentials below, or the usual AWS_* environment).
    archive_url: str | None = None
    archive_s3_endpoint_url: str | None = None
    archive_s3_region: str | None = None
    archive_s3_access_key_id: str | None = None
    archive_s3_secret_access_key: SecretStr | None = None
    # Archived files are deleted this many days after they were archived (0: kept for good).
    archive_retention_days: int = Field(default=0, ge=0)
    # Copies failing this many times in a row are given up (visible to admins on the task).
    archive_max_attempts: int = Field(default=8, ge=1)
    # With the archive on, task objects link to gateway URLs signed for this long.
    output_url_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # The gateway's address as clients reach it, for those links (default: the request's own).
    public_base_url: str | None = None

    # Demo mode (no upstream key): the simulator runs in the same process on this port.
    demo_simulator_port: int = 8001

    log_level: str = "INFO"
    # `text` for people, `json` for log pipelines (one object per line; the container's default).
    log_format: Literal["text", "json"] = "text"
    # Where alerts go (budget thresholds crossed, the master key refused): a Slack-compatible
    # webhook (`{"text": …}`), reached under the callbacks' rules. Unset: alerts are kept only.
    alert_webhook_url: str | None = None
    # Whether users signed in to the console may create and revoke their own keys.
    console_user_keys: bool = False
    # A bearer token `/metrics` asks for (unset: open, for a scraper inside the network).
    metrics_token: SecretStr | None = None

    @field_validator(
        "create_rate_limit", "read_rate_limit", "upstream_refresh_rate", "auth_failure_limit"
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        if not parse_many(value):
            raise ValueError(f"not a rate limit: {value!r} (e.g. 60/minute)")
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        key = self.upstream_api_key
        if key is not None and key.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "GATEWAY_UPSTREAM_API_KEY is a placeholder; set a real key or unset it"
            )
        if any(len(secret.get_secret_value()) < 32 for secret in self.browser_token_secrets):
            raise ValueError("each GATEWAY_BROWSER_TOKEN_SECRETS entry needs 32+ characters")
        if any(origin.rstrip("/") != origin or "://" not in origin for origin in self.cors_origins):
            raise ValueError("GATEWAY_CORS_ORIGINS takes exact origins like https://app.example")
        if self.alert_webhook_url and not self.alert_webhook_url.startswith(
            ("https://", "http://")
        ):
            raise ValueError("GATEWAY_ALERT_WEBHOOK_URL must be an http(s) URL")
        if self.archive_url and not self.archive_url.startswith(("file:///", "s3://")):
            raise ValueError("GATEWAY_ARCHIVE_URL must be file:///dir or s3://bucket/prefix")
        if self.admin_token is not None:
            token = self.admin_token.get_secret_value()
            if token.strip().lower() in PLACEHOLDER_SECRETS or len(token) < 16:
                raise ValueError("GATEWAY_ADMIN_TOKEN must be a real secret of 16+ characters")
        return self

    @cached_property
    def demo_mode(self) -> bool:
        """True when no upstream key is configured: the built-in simulator is the upstream."""
        return self.upstream_api_key is None

    def upstream_key(self) -> str:
        """The master key the gateway sends upstream (the simulator's key in demo mode)."""
        if self.upstream_api_key is None:
            return DEMO_UPSTREAM_KEY
        return self.upstream_api_key.get_secret_value()

    def secrets(self) -> list[str]:
        """Every secret the logs must never show: the master key, the admin token and the
        browser-token signing secrets."""
        admin = self.admin_token.get_secret_value() if self.admin_token is not None else ""
        signing = [secret.get_secret_value() for secret in self.browser_token_secrets]
        others = [self.archive_s3_secret_access_key, self.metrics_token]
        more = [secret.get_secret_value() for secret in others if secret is not None]
        return [secret for secret in (self.upstream_key(), admin, *more, *signing) if secret]

    def token_signing_secrets(self) -> tuple[bytes, ...]:
        """The browser-token secrets, first the one that signs; derived from the admin token
        when none is set; none (tokens off) without either."""
        if self.browser_token_secrets:
            return tuple(s.get_secret_value().encode() for s in self.browser_token_secrets)
        if self.admin_token is not None:
            admin = self.admin_token.get_secret_value().encode()
            return (hmac.new(admin, b"seedance-gateway browser tokens", "sha256").digest(),)
        return ()

    def account_keys_secret_value(self) -> str | None:
        """The secret that encrypts stored master keys, if set."""
        secret = self.account_keys_secret
        return secret.get_secret_value() if secret is not None else None

    def effective_upstream_base_url(self) -> str:
        """Where upstream calls go: the configured URL, or the in-process simulator in demo mode."""
        if self.demo_mode:
            return f"http://127.0.0.1:{self.demo_simulator_port}/api/v3"
        return self.upstream_base_url

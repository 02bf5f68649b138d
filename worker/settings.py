"""Configuration from environment variables, validated once at start.

Every setting is an environment variable with the `SW_` prefix (`SW_KAFKA_BOOTSTRAP_SERVERS`, ...), except
`REDIS_URL`, which keeps its conventional name. Secrets are `SecretStr` and never reach the logs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, FilePath, SecretStr, field_validator, model_validator
from redis.connection import parse_url
from pydantic_settings import BaseSettings, SettingsConfigDict

_TEN_YEARS = 10 * 365 * 86400  # windows longer than this (or infinite) would overflow the Redis TTLs they set


class Settings(BaseSettings):
    """All knobs of the worker. Defaults suit a local single-broker setup; production sets Kafka/Redis ones."""

    model_config = SettingsConfigDict(env_prefix="SW_", extra="ignore", populate_by_name=True)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "articles.raw"
    output_topic: str = "stories"
    dead_letter_topic: str = "articles.dlq"
    consumer_group: str = "story-worker"
    client_id: str = "story-worker"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # TLS files must exist at start: a wrong path fails the start with its name, not every connection later.
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_password: SecretStr | None = None
    session_timeout_ms: int = Field(45000, ge=1000, description="Lower (6000) on tansu: it delays joins by half.")
    heartbeat_interval_ms: int = Field(3000, ge=100)
    max_poll_interval_ms: int = Field(900000, ge=10000, description="Longest time a batch may take before the "
                                      "group evicts the member: 128 articles of 200,000 characters were estimated "
                                      "at 6-8 minutes on 2 busy cores (64 took 225 s).")
    poll_timeout_ms: int = Field(500, ge=10)
    max_batch: int = Field(128, ge=1, le=10000, description="Records per poll, i.e. per processed batch.")
    fetch_max_bytes: int = Field(52428800, ge=1024)
    max_partition_fetch_bytes: int = Field(4194304, ge=1024)
    producer_max_request_bytes: int = Field(4194304, ge=1024)
    producer_linger_ms: int = Field(10, ge=0)
    producer_compression: Literal["none", "lz4", "gzip", "zstd", "snappy"] = "lz4"
    produce_timeout_s: float = Field(30.0, gt=0)

    # Redis
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"),
                                 validation_alias=AliasChoices("REDIS_URL", "SW_REDIS_URL"))
    redis_cluster: bool = Field(False, description="REDIS_URL names a node of a Redis Cluster.")
    redis_namespace: str = Field("sw", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_timeout_s: float = Field(5.0, gt=0)
    redis_ssl_ca_certs: FilePath | None = None

    # Processing
    max_message_bytes: int = Field(1_000_000, ge=1024, description="Input larger than this is dead-lettered.")
    max_text_chars: int = Field(200_000, ge=100, description="Body text longer than this is dead-lettered.")
    dead_letter_max_bytes: int = Field(1_000_000, ge=8192, description="Largest dead letter (JSON bytes); the "
                                       "original is cut to fit. Within the topic's max.message.bytes (1 MiB).")
    event_max_bytes: int = Field(1_000_000, ge=65536, description="Largest story event (JSON bytes); an article's "
                                 "entities beyond it are left out of the event. Within the topic's max.message.bytes.")
    dedup_window_s: float = Field(7 * 86400, gt=0, le=_TEN_YEARS, description="Event-time window for duplicate matching; its "
                                  "Redis state (and the decision records) expire a day after it in live mode.")
    story_window_s: float = Field(240 * 86400, gt=0, le=_TEN_YEARS, description="Event-time window a story stays open "
                                  "(follow-ups such as trials come months later; cost does not grow with it).")
    ner_batch_size: int = Field(32, ge=1)
    story_embeddings: bool = Field(True, description="Use lead sentence embeddings (MiniLM, ONNX) in clustering: "
                                   "better stories (headlines above all) for about 4x the CPU per article.")
    embedding_threads: int = Field(0, ge=0, description="Threads of the embedding model; 0: the CPUs this process "
                                   "may use (its container's CPU limit, its CPU affinity).")
    original_wait_s: float = Field(120.0, ge=0, description="How long a duplicate or an update waits for its "
                                   "original's decision (being made by another replica) before going on without it.")
    crash_limit: int = Field(2, ge=1, description="A message that stopped this many worker processes while "
                             "processed alone (killed, out of memory, its models broken) is dead-lettered, not "
                             "tried again: no crash loop. A batch that stopped one is processed one message at a time.")
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    shutdown_deadline_s: float = Field(30.0, gt=0)

    # Operations
    stats_interval_s: float = Field(15.0, gt=0)
    heartbeat_file: str = Field("/tmp/story-worker.heartbeat", min_length=1,
                                description="Touched while the loop turns; `story-worker check` reads it.")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected redis://, rediss:// or unix:// (e.g. redis://host:6379/0)")  # not echoed: a secret
        try:
            parse_url(value.get_secret_value())
        except ValueError:  # its message may quote the URL: a secret
            raise ValueError("not a Redis URL redis-py can use: check the port and the database number") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        """Settings that are each valid but fail together, found at start rather than by the client later."""
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("SW_HEARTBEAT_INTERVAL_MS must be below SW_SESSION_TIMEOUT_MS (a third of it is usual)")
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"SW_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "SW_KAFKA_SASL_MECHANISM, SW_KAFKA_SASL_USERNAME and SW_KAFKA_SASL_PASSWORD")
        return self

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(":" not in s for s in servers):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(servers)

    @property
    def redis_dsn(self) -> str:
        return self.redis_url.get_secret_value()

    def redacted(self) -> dict[str, Any]:
        """Settings as logged at start: secrets masked, the Redis URL without its password."""
        out = self.model_dump(mode="json")
        for key, value in out.items():
            if isinstance(getattr(self, key), SecretStr) and value is not None:
                out[key] = "**********"
        out["redis_url"] = redact_url(self.redis_dsn)
        return out

    def kafka_common(self) -> dict[str, Any]:
        """kafka-python arguments shared by consumer, producer and admin client (security included)."""
        cfg: dict[str, Any] = {"bootstrap_servers": self.kafka_bootstrap_servers.split(","),
                               "client_id": self.client_id, "security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            cfg.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                       sasl_plain_password=_secret(self.kafka_sasl_password))
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            cfg.update(ssl_cafile=_path(self.kafka_ssl_cafile), ssl_certfile=_path(self.kafka_ssl_certfile),
                       ssl_keyfile=_path(self.kafka_ssl_keyfile), ssl_password=_secret(self.kafka_ssl_password))
        return cfg


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


def _path(value: Path | None) -> str | None:
    return str(value) if value else None


def redact_url(url: str) -> str:
    """`redis://user:pw@host/0` -> `redis://user:***@host/0`; a `password` query parameter (which redis-py
    also reads) is masked too."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        netloc = user + netloc.rsplit("@", 1)[1]
    if query:
        query = "&".join(f"{name}=***" if name.casefold() == "password" else
                         (f"{name}={value}" if sep else name)
                         for name, sep, value in (item.partition("=") for item in query.split("&")))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

"""A complete local stack for the demo, integration tests and fault runs: broker, Redis, topics, workers.

Uses the configured broker (`SW_KAFKA_BOOTSTRAP_SERVERS`) and Redis (`REDIS_URL`) when they answer and starts
tansu / redis-server on free loopback ports otherwise. Each stack gets its own topics, consumer group and Redis
namespace, so stacks never see each other's data, and removes what it created when it closes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from .adapters.kafka_io import ensure_topics, wait_for_broker
from .adapters.local_services import (LocalService, redis_answers, spawn, start_redis, start_tansu,
                                      stops_deferred)
from .errors import DependencyUnavailable
from .settings import Settings, redact_url

# Group timing for a local single broker (tansu delays each join by session_timeout/2).
FAST_GROUP_ENV = {"SW_SESSION_TIMEOUT_MS": "6000", "SW_HEARTBEAT_INTERVAL_MS": "1000"}


@dataclass
class WorkerProcess:
    """A `story-worker run` child process and its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the worker finishes its batch, commits, leaves the group and exits 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@dataclass
class DevStack:
    """Broker + Redis + three topics + N worker processes, with helpers to feed and read them."""

    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None  # force a particular Redis (fault tests start their own)
    keep_files: bool = True       # worker logs and heartbeats in `workdir`, for a test to read (the demo: False)
    _services: list[LocalService] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"story-worker-{run}-"))
        self.redis: redis.Redis | None = None
        self.env: dict[str, str] = {}
        try:
            self._start(run)
        except BaseException:
            self.close()  # what was started so far: a stack that failed to start leaves nothing running
            raise

    def _start(self, run: str) -> None:
        base = Settings()
        redis_url = self.redis_url or base.redis_dsn  # first: without redis-server, fail before the broker starts
        if self.redis_url and not redis_answers(redis_url):  # a Redis of the caller's: never another in its place
            raise DependencyUnavailable(f"the Redis given to the stack does not answer: {redact_url(redis_url)}")
        if not redis_answers(redis_url):
            own = start_redis()
            self._services.append(own)
            redis_url = f"redis://{own.address}/0"
        bootstrap = os.environ.get("SW_KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap or not _broker_answers(bootstrap):
            broker = start_tansu(log_dir=self.workdir)
            self._services.append(broker)
            bootstrap = broker.address
        self.env = {
            **FAST_GROUP_ENV,
            "SW_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDIS_URL": redis_url,
            "SW_INPUT_TOPIC": f"articles.raw.{run}", "SW_OUTPUT_TOPIC": f"stories.{run}",
            "SW_DEAD_LETTER_TOPIC": f"articles.dlq.{run}", "SW_CONSUMER_GROUP": f"story-worker.{run}",
            "SW_REDIS_NAMESPACE": f"sw-{run}", "SW_LOG_FORMAT": "json", "SW_LOG_LEVEL": "INFO",  # read back
            "SW_STATS_INTERVAL_S": "5",
            **self.extra_env,
        }
        self.settings = Settings(**{k[3:].lower(): v for k, v in self.env.items() if k.startswith("SW_")},
                                 redis_url=redis_url)
        self.redis = redis.Redis.from_url(redis_url)
        wait_for_broker(self.settings, timeout=60)
        ensure_topics(self.settings, partitions=self.partitions)

    @property
    def broker(self) -> LocalService | None:
        """The tansu broker this stack started (None when it uses a configured one): fault tests pause it."""
        return next((s for s in self._services if s.name == "tansu"), None)

    # -- workers ------------------------------------------------------------------------------------------

    def start_worker(self, env: dict[str, str] | None = None) -> WorkerProcess:
        name = f"worker-{len(self.workers)}"
        log_path = self.workdir / f"{name}.log"
        child_env = {**os.environ, **self.env, "SW_HEARTBEAT_FILE": str(self.workdir / f"{name}.alive"),
                     **(env or {})}
        with open(log_path, "ab") as log:
            proc = spawn([sys.executable, "-m", "worker.cli", "run"], env=child_env, stdout=log,
                         stderr=subprocess.STDOUT)
        worker = WorkerProcess(name, proc, log_path)
        self.workers.append(worker)
        return worker

    def wait_logged(self, worker: WorkerProcess, event: str, timeout: float = 90.0) -> dict:
        """Block until the worker logs `event` (e.g. partitions_assigned); raise if it dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in worker.log_lines():
                if line.get("event") == event:
                    return line
            if worker.process.poll() is not None:
                raise RuntimeError(f"{worker.name} exited {worker.process.returncode}: "
                                   f"{worker.log_path.read_text(errors='replace')[-1500:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{worker.name} did not log {event} within {timeout}s")

    # -- feeding and reading ------------------------------------------------------------------------------

    def produce(self, values: Iterable[bytes], keys: Iterable[bytes | None] | None = None,
                partitions: Iterable[int | None] | None = None) -> int:
        producer = KafkaProducer(**self.settings.kafka_common(), acks="all", linger_ms=5,
                                 max_request_size=8 * 1024 * 1024)
        values = list(values)
        keys = list(keys) if keys is not None else [None] * len(values)
        parts = list(partitions) if partitions is not None else [None] * len(values)
        try:
            sent = [producer.send(self.settings.input_topic, key=key, value=value, partition=partition)
                    for key, value, partition in zip(keys, values, parts)]
            producer.flush(30)
            for future in sent:
                future.get(timeout=30)  # a record the broker refused fails here, not later as an article "lost"
        finally:
            producer.close()
        return len(values)

    def read_topic(self, topic: str) -> list:
        """Every record of a topic, from the beginning (no group)."""
        consumer = KafkaConsumer(**self.settings.kafka_common(), enable_auto_commit=False,
                                 fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            # a partition's high watermark is known once a fetch response for it was read (None before): a
            # partition not read yet is not read to its end
            ends = [consumer.highwater(tp) for tp in parts]
            short = [(tp.partition, consumer.position(tp), end) for tp, end in zip(parts, ends)
                     if end is None or consumer.position(tp) < end]
            if not short:
                break
        else:
            consumer.close()
            raise TimeoutError(f"{topic} not read to its end in 30 s: (partition, position, end) {short}")
        consumer.close()
        return records

    def events(self) -> list[dict]:
        return [json.loads(r.value) for r in self.read_topic(self.settings.output_topic)]

    def dead_letters(self) -> list[dict]:
        return [json.loads(r.value) for r in self.read_topic(self.settings.dead_letter_topic)]

    def committed(self) -> dict[int, int]:
        """Committed offset per input partition for the workers' group."""
        consumer = KafkaConsumer(**self.settings.kafka_common(), group_id=self.settings.consumer_group,
                                 enable_auto_commit=False)
        out = {p: consumer.committed(TopicPartition(self.settings.input_topic, p)) or 0
               for p in range(self.partitions)}
        consumer.close()
        return out

    def wait_accounted(self, article_ids: set[str], dead: int, timeout: float = 120.0) -> tuple[list, list]:
        """Wait until every article id has an event and `dead` input records have a dead letter (a letter sent
        again after a kill counts once); return both lists."""
        deadline = time.monotonic() + timeout
        while True:
            events, letters = self.events(), self.dead_letters()
            seen = {e["article"]["id"] for e in events if e.get("article")}
            lettered = {(d["source"]["topic"], d["source"]["partition"], d["source"]["offset"]) for d in letters}
            if (article_ids <= seen and len(lettered) >= dead) or time.monotonic() >= deadline:
                return events, letters
            time.sleep(1.0)

    def close(self) -> None:
        """Stop the workers, then remove this stack's Redis keys and topics, then stop what it started (that,
        whatever failed before it). A second Ctrl-C or SIGTERM meanwhile waits for the cleanup to end: cut
        short, it would leave the stack's keys in a shared Redis for the story window."""
        with stops_deferred():
            try:
                for worker in self.workers:   # all asked at once: they stop side by side, not one after another
                    if worker.process.poll() is None:
                        worker.process.send_signal(signal.SIGTERM)
                for worker in self.workers:
                    worker.terminate()
                self._remove_data()
            finally:
                for service in reversed(self._services):
                    service.stop()
                if not self.keep_files:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove_data(self) -> None:
        if self.redis is not None:
            try:
                for key in self.redis.scan_iter(match=f"sw:*{self.env['SW_REDIS_NAMESPACE']}*", count=1000):
                    self.redis.delete(key)
            except redis.RedisError:
                pass
        settings = getattr(self, "settings", None)  # absent when the stack failed before its settings
        if settings is not None and self.broker is None:  # a configured broker: our own is stopped, topics and all
            try:
                admin = KafkaAdminClient(**settings.kafka_common(), request_timeout_ms=5000)
                try:
                    admin.delete_topics([settings.input_topic, settings.output_topic, settings.dead_letter_topic],
                                        timeout_ms=5000)
                finally:
                    admin.close()
            except (KafkaError, OSError):
                pass

    def __enter__(self) -> "DevStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _broker_answers(bootstrap: str) -> bool:
    """Whether any of the bootstrap servers accepts a connection (a name that does not resolve here, such as
    compose's `kafka:9092`, is one that does not answer)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=0.5):
                return True
        except (ValueError, OSError):
            continue
    return False

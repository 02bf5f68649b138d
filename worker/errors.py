"""Failure classes, decided once: retriable failures are retried with backoff and commit nothing;
permanent ones send the message to the dead-letter topic and the worker moves on."""
from __future__ import annotations


class WorkerError(Exception):
    """Root of the worker's own errors."""


class InvalidMessage(WorkerError):
    """Input that can never be processed (not UTF-8, not JSON, schema violation, too large)."""

    def __init__(self, error_class: str, reason: str):
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


class WorkerBroken(WorkerError):
    """The worker cannot process even a plain article (a model runtime broke): it stops (exit 1) rather than
    dead-letter every message; its batch is not committed and a restarted worker gets it again."""


class DependencyUnavailable(WorkerError):
    """Kafka or Redis did not answer or refused the work; retry the whole batch later."""


class StopRequested(BaseException):
    """A stop request cuts a batch short between NER chunks (the long part of a batch of long articles): the
    batch is given up alive, uncommitted, and its records go to the next owner. A BaseException, like
    KeyboardInterrupt, so that no handler of a message's own faults (poison isolation) takes it for one."""

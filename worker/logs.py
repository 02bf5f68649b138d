"""Structured logging: JSON lines for machines, readable console output on a TTY.

One call at start (`configure`); everything else asks `structlog.get_logger()`. Standard-library loggers
(kafka-python, redis) are routed through the same renderer, tracebacks included, held at WARNING, and throttled
so that they cannot flood: kafka-python logs every failed connection attempt, several a second while a broker
is down (the worker's own `batch_retry` / `poll_failed` / `waiting_for_broker` say so once per attempt). Both
write each line with one call: kafka-python logs from its own threads, and a line written in two parts (as
`print` does) can be split by another thread's line, which no JSON reader can parse.
"""
from __future__ import annotations

import logging
import math
import sys
import time

import structlog


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Set up structlog and the standard logging bridge. `fmt` is auto, json or console."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    renderer],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]))
    handler.addFilter(_not_cancelled_by_close)
    handler.addFilter(LibraryThrottle())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    for noisy in ("kafka", "redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _not_cancelled_by_close(record: logging.LogRecord) -> bool:
    """kafka-python logs a metadata refresh in flight when its client is closed (the request is `Cancelled`) as an
    ERROR: a clean stop would end on an error line. Its fetcher logs the same case at INFO."""
    from kafka.errors import Cancelled

    return not (record.name == "kafka.cluster" and any(isinstance(arg, Cancelled) for arg in record.args or ()))


class LibraryThrottle(logging.Filter):
    """At most one record per logger, level and message every `seconds`; the next one let through says how
    many like it were left out."""

    def __init__(self, seconds: float = 30.0, keys: int = 1000):
        super().__init__()
        self.seconds, self.keys = seconds, keys
        self._last: dict[tuple, float] = {}
        self._dropped: dict[tuple, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.seconds:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) >= self.keys:  # bounded: messages that embed changing text make new keys
            self._last.clear()
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this in the last {self.seconds:.0f} s left out]"
        return True

"""Structured logging: JSON lines for machines, readable console output on a TTY.

One call at start (`configure`); everything else asks `structlog.get_logger()`. Standard-library loggers
(kafka-python, redis) are routed through the same renderer, tracebacks included, and held at WARNING so they
cannot flood. Both write each line with one call: kafka-python logs from its own threads, and a line written
in two parts (as `print` does) can be split by another thread's line, which no JSON reader can parse.
"""
from __future__ import annotations

import logging
import sys

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
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    for noisy in ("kafka", "redis"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

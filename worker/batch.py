"""Offline batch mode: the stream's code path over a JSON Lines file, one decision line per input line.

File order is stream order. State lives in Redis under a namespace of its own for the run and is deleted
afterwards (keys left by a run that was killed expire a week after their last write). The output file is
written whole at the end of a run, or not at all. Serves backfills, reprocessing and measurement
(`../shared/tools/evaluate.py`).
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis
import structlog

from .core.cluster import ClusterConfig
from .core.entities import EntityExtractor
from .errors import DependencyUnavailable
from .models import Decision, SourceRecord
from .pipeline import Incoming, Pipeline
from .settings import Settings

log = structlog.get_logger()


def run_batch(settings: Settings, client: redis.Redis, input_path: Path, output_path: Path,
              chunk: int = 64, attempts: int = 5, *, extractor: EntityExtractor | None = None,
              cluster_config: ClusterConfig | None = None, embedder=None) -> dict:
    """Decide every line of `input_path` in order, write decisions to `output_path`; return counts.

    `extractor`, `cluster_config` and `embedder` default to what the settings say; measurement passes its own
    (bench/ablate_cluster.py: cached models, one signal off at a time).
    """
    namespace = f"batch-{uuid.uuid4().hex[:12]}"
    pipeline = Pipeline(settings, client, namespace, live=False,
                        extractor=extractor or EntityExtractor(batch_size=settings.ner_batch_size),
                        cluster_config=cluster_config, embedder=embedder)
    counts = {"lines": 0, "errors": 0, "duplicates": 0}
    started = time.perf_counter()
    # A file appears whole or not at all (written aside, then renamed); a pipe or device is written as it goes.
    in_place = output_path.exists() and not output_path.is_file()
    if in_place:
        partial = output_path
    else:
        fd, name = tempfile.mkstemp(prefix=output_path.name + ".", suffix=".partial", dir=output_path.resolve().parent)
        os.close(fd)
        partial = Path(name)
    try:
        with open(partial, "w", encoding="utf-8") as out:
            for batch in _chunks(input_path, chunk):
                for result in _with_retries(pipeline, batch, attempts):
                    out.write(_line(result.decision) + "\n")
                    counts["lines"] += 1
                    counts["errors"] += result.decision.error is not None
                    counts["duplicates"] += result.decision.duplicate_of is not None
        if not in_place:
            os.chmod(partial, _mode_for(output_path))  # mkstemp's 0600 would survive the rename
            partial.replace(output_path)
    finally:
        if not in_place:
            partial.unlink(missing_ok=True)
        try:
            pipeline.drop_state()
        except redis.RedisError as exc:  # the run's own error, if any, is the one to see
            log.warning("batch_state_left", namespace=namespace, reason=f"{type(exc).__name__}: {exc}",
                        expires="a week after its last write")
    counts["seconds"] = round(time.perf_counter() - started, 2)
    counts["articles_per_s"] = round(counts["lines"] / counts["seconds"], 1) if counts["seconds"] else None
    return counts


def _mode_for(path: Path) -> int:
    """The permissions a file written in place would have: the existing file's, else what the umask allows (read
    by setting it; batch mode's other threads, the models', create no files)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _chunks(path: Path, size: int) -> Iterator[list[Incoming]]:
    batch: list[Incoming] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark some editors write
            batch.append(Incoming(value=line,
                                  source=SourceRecord(topic=None, partition=None, offset=number, timestamp=None)))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _with_retries(pipeline: Pipeline, batch: list[Incoming], attempts: int):
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return pipeline.process(batch)
        except DependencyUnavailable as exc:
            if attempt == attempts:
                raise
            log.warning("batch_retry", reason=str(exc), attempt=attempt)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _line(decision: Decision) -> str:
    if decision.error is not None:
        return decision.model_dump_json(include={"id", "error"})
    return decision.model_dump_json(exclude={"error"})

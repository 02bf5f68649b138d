"""Per-article decision records in Redis: what makes a redelivered message give the same answer.

Key `sw:<namespace>:dec:<article id>` holds the article's decision, as JSON, with the story events it caused
until the broker acknowledged them (then only that they were); `sw:<namespace>:dlq:<topic>:<partition>:<offset>:
<timestamp>` marks an input record whose dead letter was acknowledged (the broker timestamp tells a record
apart from one at the same offset of a topic deleted and created again). `sw:<namespace>:began:<topic>:<partition>`
holds, per worker process, the offsets of the batch it began and has not published, and `began1:<topic>:
<partition>:<offset>:<timestamp>` the processes that began a record alone and did not finish it: a record that
stopped workers (killed, out of memory, a model runtime it broke) is found by them.
Single-key operations only (Redis Cluster safe).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from ..models import SourceRecord


def _ranges(sources: Sequence[SourceRecord]) -> dict[tuple, tuple[int, int]]:
    """(topic, partition) -> the lowest and highest offset of the records given."""
    out: dict[tuple, tuple[int, int]] = {}
    for s in sources:
        where = (s.topic, s.partition)
        low, high = out.get(where, (s.offset, s.offset))
        out[where] = (min(low, s.offset), max(high, s.offset))
    return out


def _range(value: bytes) -> tuple[int, int]:
    low, high = value.split()
    return int(low), int(high)


class DecisionLog:
    """Read and write decision records, one pipelined round trip per batch."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: int | None):
        self._r = client
        self._prefix = f"sw:{namespace}:dec:"
        self._letters = f"sw:{namespace}:dlq:"
        self._began = f"sw:{namespace}:began:"
        self._began_alone = f"sw:{namespace}:began1:"
        self._ttl = ttl_seconds

    def _key(self, article_id: str) -> str:
        return self._prefix + article_id

    def load(self, article_ids: Sequence[str]) -> dict[str, dict]:
        """Records of the given articles that exist."""
        if not article_ids:
            return {}
        pipe = self._r.pipeline(transaction=False)  # not MGET: the keys spread over Redis Cluster slots
        for article_id in article_ids:
            pipe.get(self._key(article_id))
        raw = pipe.execute()
        return {a: json.loads(v) for a, v in zip(article_ids, raw) if v is not None}

    def save(self, records: dict[str, dict]) -> None:
        """Write records (decision + events, published=False) for newly decided articles."""
        if not records:
            return
        pipe = self._r.pipeline(transaction=False)
        for article_id, record in records.items():
            pipe.set(self._key(article_id), json.dumps(record, separators=(",", ":")), ex=self._ttl)
        pipe.execute()

    def mark_published(self, records: dict[str, dict]) -> None:
        """After the broker acknowledged their events: a later redelivery then emits nothing, so the events are
        not kept (they repeat the decision's entities: half the record)."""
        self.save({a: {**r, "published": True, "events": []} for a, r in records.items()})

    def letters_published(self, sources: Sequence[SourceRecord]) -> set[tuple]:
        """(topic, partition, offset, timestamp) of the given input records whose dead letter was acknowledged."""
        pipe = self._r.pipeline(transaction=False)
        for source in sources:
            pipe.exists(self._letter_key(source))
        return {(s.topic, s.partition, s.offset, s.timestamp) for s, found in zip(sources, pipe.execute()) if found}

    def mark_letters_published(self, sources: Sequence[SourceRecord]) -> None:
        if not sources:
            return
        pipe = self._r.pipeline(transaction=False)
        for source in sources:
            pipe.set(self._letter_key(source), 1, ex=self._ttl)
        pipe.execute()

    def _letter_key(self, source: SourceRecord) -> str:
        return self._letters + self._where(source)

    @staticmethod
    def _where(source: SourceRecord) -> str:
        return f"{source.topic}:{source.partition}:{source.offset}:{source.timestamp}"

    def begin(self, sources: Sequence[SourceRecord], process_id: str) -> list[int]:
        """Record that this process began a batch of the given input records; for each record, how many other
        processes began one holding it and never finished it (each stopped with it in hand).

        One hash per partition, its fields the processes' offset ranges: a few commands a batch, not a few a
        record (a batch holds consecutive offsets of each partition)."""
        ranges = _ranges(sources)
        pipe = self._r.pipeline(transaction=False)
        for (topic, partition), (low, high) in ranges.items():
            key = self._began_key(topic, partition)
            pipe.hset(key, process_id, f"{low} {high}")
            if self._ttl:
                pipe.expire(key, self._ttl)
            pipe.hgetall(key)
        per = 3 if self._ttl else 2  # replies per partition, the last one the hash
        replies = pipe.execute()[per - 1::per]
        held = {where: [_range(v) for k, v in reply.items() if k.decode() != process_id]
                for where, reply in zip(ranges, replies)}
        return [sum(low <= s.offset <= high for low, high in held[(s.topic, s.partition)]) for s in sources]

    def begin_alone(self, source: SourceRecord, process_id: str) -> int:
        """Record that this process began the record alone; how many other processes began it alone and never
        finished it. Kept after a record is dead-lettered for it, so that a redelivery of the record stops at
        most one more worker."""
        key = self._began_alone + self._where(source)
        pipe = self._r.pipeline(transaction=False)
        pipe.sadd(key, process_id)
        pipe.scard(key)
        if self._ttl:
            pipe.expire(key, self._ttl)
        return pipe.execute()[1] - 1

    def finish_alone(self, source: SourceRecord) -> None:
        """The record, processed alone, stopped no worker."""
        self._r.delete(self._began_alone + self._where(source))

    def finish(self, sources: Sequence[SourceRecord], process_id: str) -> None:
        """The batch is published: this process's range goes, with every range that ends at or before the
        batch's (the records of those stopped processes are settled too; the offsets commit in order)."""
        ranges = _ranges(sources)
        if not ranges:
            return
        pipe = self._r.pipeline(transaction=False)
        for topic, partition in ranges:
            pipe.hgetall(self._began_key(topic, partition))
        settled = []
        for ((topic, partition), (_, high)), held in zip(ranges.items(), pipe.execute()):
            fields = [k for k, v in held.items() if k.decode() == process_id or _range(v)[1] <= high]
            if fields:
                settled.append((self._began_key(topic, partition), fields))
        pipe = self._r.pipeline(transaction=False)
        for key, fields in settled:
            pipe.hdel(key, *fields)
        pipe.execute()

    def abandon(self, sources: Sequence[SourceRecord], process_id: str, batch: bool = True) -> None:
        """This process gave the records up alive (their partition moved, or a stop came in an outage): it did
        not stop with them in hand. Its marks of their runs alone go, and its batch's range on their partitions
        too unless not `batch` (one message of a batch still in hand)."""
        if not sources:
            return
        pipe = self._r.pipeline(transaction=False)
        for topic, partition in _ranges(sources) if batch else ():
            pipe.hdel(self._began_key(topic, partition), process_id)
        for source in sources:
            pipe.srem(self._began_alone + self._where(source), process_id)
        pipe.execute()

    def _began_key(self, topic: str | None, partition: int | None) -> str:
        return f"{self._began}{topic}:{partition}"

    def drop(self) -> None:
        """Delete every record of the namespace (batch mode cleans up after itself)."""
        batch: list[str] = []
        for prefix in (self._prefix, self._letters, self._began, self._began_alone):
            for key in self._r.scan_iter(match=prefix + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self._r.delete(*batch)
                    batch.clear()
        if batch:
            self._r.delete(*batch)

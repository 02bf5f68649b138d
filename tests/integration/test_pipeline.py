"""The pipeline on a real Redis, with a stand-in NER model (the model itself is tested in test_entities)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from types import SimpleNamespace

import pytest
import redis as redis_lib
import structlog
from kafka.structs import TopicPartition

from worker.batch import run_batch
from worker.core.dedup import DedupInput
from worker.core.normalize import canonical_url
from worker.core.entities import Entity
from worker.errors import StopRequested, WorkerBroken
from worker.models import SourceRecord
from worker.pipeline import Incoming, OriginalPending, Pipeline
from worker.settings import Settings
from worker.stream import StreamWorker

pytestmark = pytest.mark.integration


class FakeExtractor:
    """Tags the first word of each title as an ORG; raises on a poison title."""

    def __init__(self):
        self.calls = []

    def extract(self, docs):
        self.calls.append([title for title, _ in docs])
        out = []
        for title, _text in docs:
            if "POISON" in title:
                raise ValueError("model cannot handle this text")
            word = title.split()[0]
            out.append([Entity(text=word, label="ORG", start=0, end=len(word), canonical=word, field="title")])
        return out


def article(n: int, **over) -> dict:
    body = f"Report number {n} about the harbour authority of town {n} and its new ferry timetable. " * 3
    return {"id": f"a{n}", "url": f"https://news.example/{n}", "title": f"Town{n} ferry timetable changes",
            "source": f"outlet{n}", "published_at": f"2026-03-{10 + n % 10:02d}T08:00:00Z", "text": body, **over}


def incoming(docs: list) -> list[Incoming]:
    return [Incoming(value=d if isinstance(d, bytes) else json.dumps(d).encode(),
                     source=SourceRecord(topic="t", partition=0, offset=i, timestamp=None)) for i, d in enumerate(docs)]


def decisions_by_cut(redis_client, tmp_path, docs: list[dict], chunks) -> dict[int, list[dict]]:
    """Batch mode over `docs`, once per chunk size: its decision lines."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    outs = {}
    for chunk in chunks:
        out = tmp_path / f"out{chunk}.jsonl"
        run_batch(Settings(), redis_client, src, out, chunk=chunk, extractor=FakeExtractor())
        outs[chunk] = [json.loads(line) for line in out.read_text().splitlines()]
    return outs


@pytest.fixture
def pipeline(redis_client):
    p = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=False, extractor=FakeExtractor())
    yield p
    p.drop_state()


def test_poison_message_is_dead_lettered_and_the_rest_decided(pipeline):
    docs = [article(1), article(2, title="POISON headline"), article(3)]
    results = pipeline.process(incoming(docs))
    assert [r.dead_letter is not None for r in results] == [False, True, False]
    assert results[1].dead_letter.error_class == "processing" and "model cannot" in results[1].dead_letter.reason
    assert results[0].decision.story_id and results[2].decision.story_id


def test_models_that_fail_on_every_article_stop_the_worker_instead_of_dead_lettering_the_stream(redis_client):
    """A broken model runtime (out of memory, a bad install) is no property of the messages: dead-lettering them
    would commit past every article. The batch fails with WorkerBroken and nothing is dead-lettered or decided."""

    class BrokenExtractor(FakeExtractor):
        def extract(self, docs):
            raise RuntimeError("onnx/spacy: failed to allocate memory")

    p = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=False, extractor=BrokenExtractor())
    try:
        with pytest.raises(WorkerBroken, match="failed to allocate"):
            p.process(incoming([article(1), article(2)]))
        p.extractor = FakeExtractor()  # mended (a restart): the same batch is decided, nothing was held against it
        assert all(r.decision.story_id and r.dead_letter is None for r in p.process(incoming([article(1), article(2)])))
    finally:
        p.drop_state()


class RuntimeBreaker(FakeExtractor):
    """A model runtime that one message corrupts ("BREAKS" in its title): every call from then on fails."""

    def __init__(self):
        super().__init__()
        self.broken = False

    def extract(self, docs):
        self.calls.append([title for title, _ in docs])
        if self.broken or any("BREAKS" in title for title, _ in docs):
            self.broken = True
            raise RuntimeError("runtime corrupted")
        return super().extract(docs)


class Killed(BaseException):
    """Stands for the process dying in the middle of a message (SIGKILL, the out-of-memory killer): no handler
    of the worker runs."""


class Killer(FakeExtractor):
    def extract(self, docs):
        if any("KILLS" in title for title, _ in docs):
            self.calls.append([title for title, _ in docs])
            raise Killed()
        return super().extract(docs)


def _began_keys(client, namespace):
    return sorted(client.scan_iter(match=f"sw:{namespace}:began*"))


def test_a_message_that_breaks_the_models_stops_workers_then_is_dead_lettered(redis_client):
    """The models fail after one message, on the probe too: the worker stops (WorkerBroken) and is restarted with
    sound models, which the same message breaks again. Without a limit that is a crash loop on one message.
    The first worker breaks on the whole batch (the models broken, the article after it is blamed); the next two
    run the batch one message at a time and break on that message alone (SW_CRASH_LIMIT, 2); the third restart
    dead-letters it without running it, and decides the rest of its batch."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    batch = incoming([article(1), article(2, title="BREAKS the runtime"), article(3)])
    try:
        for _restart in range(3):
            with pytest.raises(WorkerBroken, match="runtime corrupted"):
                Pipeline(Settings(), redis_client, namespace, live=True, extractor=RuntimeBreaker()).process(batch)
        third = RuntimeBreaker()
        restarted = Pipeline(Settings(), redis_client, namespace, live=True, extractor=third)
        results = restarted.process(batch)
        assert [r.dead_letter is not None for r in results] == [False, True, False]
        assert results[1].dead_letter.error_class == "processing"
        assert "stopped 2 times" in results[1].dead_letter.reason
        assert results[0].decision.story_id and results[2].decision.story_id
        assert not any("BREAKS" in title for call in third.calls for title in call)
        restarted.confirm_published(results, [m.source for m in batch])  # published: the batch's marks go
        assert _began_keys(redis_client, namespace) == [f"sw:{namespace}:began1:t:0:1:None".encode()]
    finally:
        Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor()).drop_state()


def test_a_message_that_kills_the_worker_is_found_and_dead_lettered_and_a_killed_batch_is_redone(redis_client):
    """A message that kills the process (no handler runs): the batch is redone one message at a time by the next
    process, which finds it; two processes killed by it alone and the next dead-letters it, unrun, also when
    its batch is retried after a failed publish; redelivered after its letter went out (a commit lost), it kills
    one more worker at most. A worker killed once (a deploy) costs its successor one batch run message by
    message, with the same decisions."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    other = "The council approved the library budget after a long debate in the town hall on Tuesday evening."
    batch = incoming([article(1), article(2, title="KILLS the process"), article(3, text=other)])
    try:
        whole = Killer()
        with pytest.raises(Killed):
            Pipeline(Settings(), redis_client, namespace, live=True, extractor=whole).process(batch)
        assert len(whole.calls) == 1 and len(whole.calls[0]) == 3  # the whole batch, as usual
        for _restart in range(2):  # one message at a time: the first is decided, the second kills
            restarted = Killer()
            with pytest.raises(Killed):
                Pipeline(Settings(), redis_client, namespace, live=True, extractor=restarted).process(batch)
            assert restarted.calls[-1] == ["KILLS the process"]
        last = Killer()
        restarted = Pipeline(Settings(), redis_client, namespace, live=True, extractor=last)
        results = restarted.process(batch)
        assert [r.dead_letter is not None for r in results] == [False, True, False]
        assert "stopped 2 times" in results[1].dead_letter.reason
        assert [r.decision.story_id is not None for r in results] == [True, False, True]
        assert last.calls == [["Town3 ferry timetable changes"]]  # the first was decided before
        # the publish failed: the batch retried by the same process does not run the killer either
        again = restarted.process(batch)
        assert [r.dead_letter is not None for r in again] == [False, True, False]
        assert last.calls == [["Town3 ferry timetable changes"]]
        restarted.confirm_published(again, [m.source for m in batch])
        # the killer's own mark stays: redelivered (a commit lost to a rebalance), it stops one more worker at most
        assert _began_keys(redis_client, namespace) == [f"sw:{namespace}:began1:t:0:1:None".encode()]
        with pytest.raises(Killed):
            Pipeline(Settings(), redis_client, namespace, live=True, extractor=Killer()).process(batch)
        final = Killer()
        restarted = Pipeline(Settings(), redis_client, namespace, live=True, extractor=final)
        redelivered = restarted.process(batch)
        assert redelivered[1].decision.error.startswith("processing: the worker stopped")
        assert redelivered[1].redelivered and redelivered[1].dead_letter is None  # its letter went out before
        assert final.calls == []
        restarted.confirm_published(redelivered, [m.source for m in batch])
        # the next batch is run whole again
        after = Killer()
        restarted.extractor = after
        restarted.process(incoming([
            article(4, text="A storm closed the ferry port overnight and crossings resume on Friday morning."),
            article(5, text="Farmers protested outside the parliament against the new water charges.")]))
        assert len(after.calls) == 1 and len(after.calls[0]) == 2
    finally:
        Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor()).drop_state()


def test_a_copy_read_before_its_original_joins_it_when_its_batch_is_run_one_message_at_a_time(redis_client):
    """Live, a batch is decided in event-time order, so an original published first is decided before a copy
    that the partitions delivered ahead of it. Run one message at a time (a poison message), the copy comes
    first again: it must not wait for an original that only its own batch would decide."""
    live = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=True, extractor=FakeExtractor())
    try:
        original = article(1)
        copy = {**original, "id": "copy", "url": "https://mirror.example/1", "published_at": "2026-03-11T09:00:00Z"}
        results = live.process(incoming([copy, original, article(3, title="POISON headline")]))
        assert [r.dead_letter is not None for r in results] == [False, False, True]
        assert results[0].decision.duplicate_of == "a1"
        assert results[0].decision.story_id == results[1].decision.story_id
    finally:
        live.drop_state()


def test_a_batch_run_one_message_at_a_time_after_a_stop_decides_as_it_would_whole(redis_client):
    """Live, a batch is decided in event-time order: the original published first is the original, whichever
    partition delivered it first. Run one message at a time (a worker stopped with it in hand), the same."""
    live = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=True, extractor=FakeExtractor())
    try:
        original = article(1)
        copy = {**original, "id": "copy", "url": "https://mirror.example/1", "published_at": "2026-03-11T09:00:00Z"}
        batch = incoming([copy, original])
        live.decisions.begin([m.source for m in batch], "a-worker-that-was-killed")
        results = live.process(batch)
        assert results[0].decision.duplicate_of == "a1" and results[1].decision.duplicate_of is None
    finally:
        live.drop_state()


def test_the_copies_of_a_poison_article_do_not_wait_for_it(pipeline):
    """It holds its dedup claim but will never have a decision: its copies go on without it, at once."""
    poison = article(2, title="POISON headline")
    assert pipeline.process(incoming([poison]))[0].dead_letter is not None
    copy = {**poison, "id": "copy", "url": "https://other.example/2", "title": "Poison headline (wire)"}
    decided = pipeline.process(incoming([copy]))[0]
    assert decided.dead_letter is None and decided.decision.duplicate_of == "a2" and decided.decision.story_id
    assert [e.event for e in decided.events] == ["created"]  # a new article in its place: its original has no story
    assert [e.canonical for e in decided.decision.entities] == ["Poison"]  # and tagged as one (the stand-in NER)
    again = pipeline.process(incoming([poison]))[0]  # redelivered, it is dead-lettered again, not replayed
    assert again.dead_letter is not None and not again.redelivered


def test_headline_only_items_without_an_id_at_one_url_are_told_apart_by_their_titles(pipeline):
    first = {k: v for k, v in article(1, text=None).items() if k != "id"}
    second = {**first, "title": "Town1 ferry timetable changes again"}
    results = pipeline.process(incoming([first, second]))
    assert results[0].decision.id != results[1].decision.id and not results[1].redelivered
    assert results[1].decision.update_of == results[0].decision.id  # same URL, new content: an update


def test_same_id_twice_in_a_batch_decides_once(pipeline):
    results = pipeline.process(incoming([article(1), article(1)]))
    assert results[0].decision == results[1].decision
    assert len(results[0].events) == 1 and results[1].events == [] and results[1].redelivered


@pytest.mark.parametrize("one_batch", [False, True])
def test_an_update_after_a_dead_lettered_update_updates_the_version_before_it(pipeline, one_batch):
    """X, then an update of it that makes processing fail (dead-lettered), then another update: the last one
    replaces X in X's story, not counted as a second article of it, whether the updates come one by one or in
    one batch."""
    x = article(1)
    poison = {**x, "id": "u1", "title": "POISON Town1 ferry timetable changes", "text": x["text"] + " Update one.",
              "published_at": "2026-03-11T09:00:00Z"}
    second = {**x, "id": "u2", "title": "Town1 ferry timetable changes again", "text": x["text"] + " Update two.",
              "published_at": "2026-03-11T10:00:00Z"}
    created = pipeline.process(incoming([x]))[0]
    if one_batch:
        dead, updated = pipeline.process(incoming([poison, second]))
    else:
        dead, = pipeline.process(incoming([poison]))
        updated, = pipeline.process(incoming([second]))
    assert dead.dead_letter is not None
    assert updated.decision.update_of == "a1" and updated.decision.story_id == created.decision.story_id
    assert [e.event for e in updated.events] == ["article_updated"]
    assert updated.events[0].story.article_count == 1


def test_a_page_sent_again_and_its_feed_headline_then_edited_stay_one_article_and_two_copies(pipeline):
    """The copies at the page's URL hold nothing of their own in the story: the edit replaces the page."""
    x = article(1)
    resent = {**x, "id": "r1", "published_at": "2026-03-11T09:00:00Z"}
    headline = {**x, "id": "h1", "text": None, "published_at": "2026-03-11T09:30:00Z"}
    edited = {**x, "id": "e1", "title": "Ferry timetable changes in Town1", "text": x["text"] + " Update.",
              "published_at": "2026-03-11T10:00:00Z"}
    results = [pipeline.process(incoming([doc]))[0] for doc in (x, resent, headline, edited)]
    assert [(r.decision.duplicate_kind, r.decision.update_of) for r in results] == [
        (None, None), ("exact_url", None), ("exact_url", None), (None, "a1")]
    story = results[-1].events[0].story
    assert (story.article_count, story.copies) == (1, 2)
    assert [(e["canonical"], e["count"]) for e in story.model_dump()["top_entities"]] == [("Ferry", 1)]


def test_an_edit_after_a_resent_copy_of_a_dead_lettered_page_updates_the_copy(pipeline):
    """The page failed (dead-lettered); its copy at the same URL was clustered as an article of its own: the
    edit replaces that copy, not counted as a second article."""
    x = article(1)
    poison = {**x, "title": "POISON Town1 ferry timetable changes"}
    resent = {**x, "id": "r1", "published_at": "2026-03-11T09:00:00Z"}
    edited = {**x, "id": "e1", "text": x["text"] + " Update.", "published_at": "2026-03-11T10:00:00Z"}
    dead, copy, update = [pipeline.process(incoming([doc]))[0] for doc in (poison, resent, edited)]
    assert dead.dead_letter is not None and copy.decision.duplicate_kind == "exact_url"
    assert update.decision.update_of == "r1" and update.decision.story_id == copy.decision.story_id
    assert [(e.event, e.story.article_count) for e in update.events] == [("article_updated", 1)]


def test_a_published_decision_keeps_no_events_and_a_redelivery_emits_none(pipeline):
    """The events repeat the decision's entities: kept after publishing, they doubled a record kept for days."""
    first = pipeline.process(incoming([article(1)]))
    assert pipeline.decisions.load(["a1"])["a1"]["events"]  # not published yet: a redelivery sends them
    pipeline.confirm_published(first)
    assert pipeline.decisions.load(["a1"])["a1"]["events"] == []
    again = pipeline.process(incoming([article(1)]))[0]
    assert again.decision == first[0].decision and again.events == [] and again.redelivered


def test_ner_runs_in_chunks_bounded_by_articles_and_characters():
    from worker.pipeline import _NER_CHUNK_CHARS, _ner_chunks

    def item(chars):
        return SimpleNamespace(article=SimpleNamespace(title="t", text="x" * chars))

    assert [len(c) for c in _ner_chunks([item(10)] * 70, 32)] == [32, 32, 6]
    assert [len(c) for c in _ner_chunks([item(_NER_CHUNK_CHARS // 5)] * 7, 32)] == [4, 3]
    # the model reads 100,000 characters of a text: a longer one counts that much
    assert [len(c) for c in _ner_chunks([item(10 * _NER_CHUNK_CHARS)] * 5, 32)] == [3, 2]


def _claim(replica: Pipeline, doc: dict) -> None:
    """The replica has claimed the article in dedup, as a batch does before deciding it; no decision follows."""
    replica.dedup.check_and_insert([DedupInput(doc["id"], canonical_url(doc["url"]), doc["title"], doc["text"],
                                               1773129600.0)])


def _one(doc: dict, offset: int) -> list[Incoming]:
    return [Incoming(value=json.dumps(doc).encode(), source=SourceRecord(topic="t", partition=0, offset=offset,
                                                                          timestamp=None))]


def test_an_update_that_stopped_workers_and_one_after_a_dead_update_still_update_the_live_version(redis_client):
    """x, then u1 which kills workers (dead-lettered unrun by the crash limit), then u2, dead-lettered too (it
    makes processing fail), then u3: u3 replaces x in x's story; nothing is counted as a second article."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    x = article(1)
    u1 = {**x, "id": "u1", "title": "KILLS Town1 ferry timetable", "text": x["text"] + " One.",
          "published_at": "2026-03-11T09:00:00Z"}
    u2 = {**u1, "id": "u2", "title": "POISON Town1 ferry timetable", "text": x["text"] + " Two.",
          "published_at": "2026-03-11T10:00:00Z"}
    u3 = {**u1, "id": "u3", "title": "Town1 ferry timetable again", "text": x["text"] + " Three.",
          "published_at": "2026-03-11T11:00:00Z"}

    class Both(Killer):
        def extract(self, docs):
            if any("POISON" in title for title, _ in docs):
                raise ValueError("model cannot handle this text")
            return super().extract(docs)

    def worker() -> Pipeline:
        return Pipeline(Settings(), redis_client, namespace, live=True, extractor=Both())

    try:
        created = worker().process(_one(x, 0))[0]
        for _ in range(3):
            with pytest.raises(Killed):
                worker().process(_one(u1, 1))
        assert "stopped 2 times" in worker().process(_one(u1, 1))[0].dead_letter.reason
        assert worker().process(_one(u2, 2))[0].dead_letter.error_class == "processing"
        updated = worker().process(_one(u3, 3))[0]
        assert updated.decision.update_of == "a1" and updated.decision.story_id == created.decision.story_id
        assert [(e.event, e.story.article_count) for e in updated.events] == [("article_updated", 1)]
    finally:
        worker().drop_state()


def test_a_batch_given_up_at_a_stop_between_ner_chunks_is_decided_whole_by_the_next_worker(redis_client):
    """A stop cuts a batch of long articles short after a NER chunk; given up alive, the batch is neither
    counted as one that stopped a worker (run message by message) nor decided in part."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    bodies = ["The harbour master closed the outer quay after a storm tore loose two mooring posts.",
              "A bakery on Mill Lane won the regional bread award for its rye loaf, beating forty entrants.",
              "Volunteers planted six hundred oak saplings along the old railway line on Saturday."]
    batch = incoming([article(n, text=body) for n, body in enumerate(bodies, 1)])
    stopping = Pipeline(Settings(ner_batch_size=1), redis_client, namespace, live=True, extractor=FakeExtractor())
    stopping.stop_requested = lambda: True
    try:
        with pytest.raises(StopRequested):
            stopping.process(batch)
        assert len(stopping.extractor.calls) == 1  # one chunk, then the stop
        stopping.abandon([m.source for m in batch])
        with structlog.testing.capture_logs() as logs:
            results = Pipeline(Settings(ner_batch_size=1), redis_client, namespace, live=True,
                               extractor=FakeExtractor()).process(batch)
        assert [r.decision.id for r in results] == ["a1", "a2", "a3"]
        assert all(r.events and r.decision.story_id and not r.redelivered for r in results)
        assert not [line for line in logs if line["event"] == "batch_isolated_after_stop"]
    finally:
        stopping.drop_state()


def test_a_stop_ends_a_pass_one_message_at_a_time_after_the_message_in_hand(redis_client):
    """A poison message makes the batch run one message at a time (a NER call each): a stop ends the pass."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    docs = [article(1, title="POISON Town1", published_at="2026-03-01T08:00:00Z"),
            article(2, text="A bakery on Mill Lane won the regional bread award for its rye loaf."),
            article(3, text="Volunteers planted six hundred oak saplings along the old railway line.")]
    stopping = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
    stopping.stop_requested = lambda: bool(stopping.extractor.calls[1:])   # once the pass has begun
    try:
        with pytest.raises(StopRequested):
            stopping.process(incoming(docs))
        whole, *alone = stopping.extractor.calls
        assert whole == [d["title"] for d in docs] and alone[0] == ["POISON Town1"]
        assert not {d["title"] for d in docs[1:]} & {title for call in alone for title in call}  # not run alone
    finally:
        stopping.drop_state()


def test_an_id_twice_in_a_batch_run_one_message_at_a_time_goes_out_once(redis_client):
    """After a stopped worker, or because of a poison message, the batch runs one message at a time: the second
    copy of an id replays the first's record, and must not send its events again."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    batch = incoming([article(1), article(1), article(2, title="POISON x")])
    pipeline = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
    try:
        results = pipeline.process(batch)
        assert [(len(r.events), r.redelivered) for r in results[:2]] == [(1, False), (0, True)]
    finally:
        pipeline.drop_state()


def test_a_message_a_live_worker_gave_up_is_not_counted_against_it(redis_client):
    """A copy waits for its original, being decided by another replica; three live workers in turn give its
    batch up (the retry, then the partition moved). None of them stopped: the fourth decides it."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    original = article(1)
    copy = {**original, "id": "copy", "url": "https://mirror.example/1", "published_at": "2026-03-11T09:00:00Z"}
    holder = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
    try:
        _claim(holder, original)
        poison = _one({**article(2), "title": "POISON y"}, 1)  # so that the batch runs one message at a time
        batch = _one(copy, 0) + poison
        for _ in range(3):
            gave_up = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
            with pytest.raises(OriginalPending):
                gave_up.process(batch)
            # the copy, run alone, took back its own mark only: the batch is still in hand
            assert redis_client.hexists(f"sw:{namespace}:began:t:0", gave_up._process_id)
            gave_up.abandon([m.source for m in batch])  # as the stream does when the partition moves
        holder.process(incoming([original]))
        fourth = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
        decided = fourth.process(batch)[0]
        assert decided.dead_letter is None and decided.decision.duplicate_of == "a1"
    finally:
        holder.drop_state()


def test_a_batch_that_waits_for_an_original_decides_its_other_articles_first(redis_client):
    """Replica B's batch holds an original and a copy whose original replica C claimed and has not decided: B
    waits. Replica A's copy of B's original must not wait for B's batch (while B's batch, grown by its retry, might
    come to wait for an original of A's): B decided its original before waiting."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    held = article(1)
    b_original = {"id": "a2", "url": "https://other.example/2", "title": "Storm closes mountain pass for the winter",
                  "source": "outlet2", "published_at": "2026-03-12T08:00:00Z",
                  "text": "Snow and high winds closed the northern mountain pass on Monday, and the road office said "
                          "it would stay shut until spring while crews clear three avalanches."}
    c, b, a = (Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor()) for _ in range(3))
    try:
        _claim(c, held)  # claimed by C, not decided
        copy_of_held = {**held, "id": "c1", "url": "https://mirror.example/1", "published_at": "2026-03-11T09:00:00Z"}
        b_batch = [Incoming(value=json.dumps(d).encode(),
                            source=SourceRecord(topic="t", partition=1, offset=i, timestamp=None))
                   for i, d in enumerate([b_original, copy_of_held])]
        with pytest.raises(OriginalPending):
            b.process(b_batch)
        assert b.extractor.calls == [[b_original["title"]]]  # tagged once, alone: the wait came before any NER
        copy_of_b = {**b_original, "id": "c2", "url": "https://mirror.example/2",
                     "published_at": "2026-03-12T09:00:00Z"}
        decided = a.process([Incoming(value=json.dumps(copy_of_b).encode(),
                                      source=SourceRecord(topic="t", partition=0, offset=0, timestamp=None))])
        assert decided[0].decision.duplicate_of == "a2"
        # B's retry: its original is replayed from its record (its events not sent yet), its copy still waits for C
        c.process(incoming([held]))
        retried = b.process(b_batch)
        assert [r.decision.id for r in retried] == ["a2", "c1"] and retried[0].events and not retried[0].redelivered
        assert retried[1].decision.duplicate_of == "a1"
    finally:
        c.drop_state()


def test_a_copy_whose_wait_ran_out_goes_on_without_its_original_even_when_its_batch_fails_once(redis_client):
    """The copy's wait (0.2 s here) has run out when its batch, which also holds a poison message, fails whole
    and is run one message at a time: run alone, the copy must not begin a new wait (then and at every retry)."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    held = article(1)
    c = Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor())
    b = Pipeline(Settings(original_wait_s=0.2), redis_client, namespace, live=True, extractor=FakeExtractor())
    try:
        _claim(c, held)  # claimed, never decided (its record lost)
        copy = {**held, "id": "c1", "url": "https://mirror.example/1", "published_at": "2026-03-11T09:00:00Z"}
        with pytest.raises(OriginalPending):
            b.process(incoming([copy]))
        time.sleep(0.3)
        with structlog.testing.capture_logs() as logs:
            results = b.process(incoming([copy, {**article(2), "title": "POISON z"}]))
        assert results[0].decision.duplicate_of == "a1" and results[1].dead_letter is not None
        assert [line["event"] for line in logs].count("original_missing") == 1
        assert b._pending_since == {}
    finally:
        c.drop_state()


def test_a_chain_of_updates_waiting_for_its_first_is_not_run_one_message_at_a_time(redis_client, monkeypatch):
    """v1 updates v0 (claimed by another replica, not decided), v2 updates v1 and v3 updates v2: all wait."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    v0 = article(1)
    c, b = (Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor()) for _ in range(2))
    try:
        _claim(c, v0)
        versions = [{**v0, "id": f"v{n}", "published_at": f"2026-03-11T0{n}:00:00Z",
                     "text": v0["text"] + f" Correction number {n}: the ferry leaves from pier {n} from now on."}
                    for n in range(1, 4)]
        alone = []
        monkeypatch.setattr(b, "_process_alone", lambda msg: alone.append(msg) or [])
        with pytest.raises(OriginalPending):
            b.process(incoming(versions))
        assert alone == []
    finally:
        c.drop_state()


def test_a_dateless_article_run_one_message_at_a_time_takes_the_time_the_whole_batch_gives_it(redis_client):
    """The time of the article before it in input order (here: none, so now), not of the one decided before it."""
    dateless = {"id": "d", "url": "https://news.example/d", "title": "Museum reopens its east wing to visitors",
                "source": "outlet-d", "text": "The city museum reopened its east wing after two years of repairs "
                                               "to the roof and the lighting of the painting galleries."}
    dated = [{"id": f"x{n}", "url": f"https://news.example/x{n}", "title": title, "source": f"outlet-x{n}",
              "published_at": f"2026-03-1{n}T08:00:00Z", "text": text}
             for n, (title, text) in enumerate([
                 ("Storm closes mountain pass for the winter", "Snow and high winds closed the northern pass on "
                  "Monday; the road office said it would stay shut until spring while crews clear avalanches."),
                 ("Council approves new tram line budget", "The council voted to fund the tram extension to the "
                  "airport, with building due to start next year and trams running by the end of the decade.")])]
    first_seen = {}
    for poisoned in (False, True):
        p = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=True, extractor=FakeExtractor())
        try:
            docs = [dateless, *dated] + ([{**article(9), "title": "POISON z"}] if poisoned else [])
            results = p.process(incoming(docs))  # the poison makes the batch run one message at a time
            first_seen[poisoned] = results[0].events[0].story.first_seen
        finally:
            p.drop_state()
    assert abs((first_seen[True] - first_seen[False]).total_seconds()) < 600, first_seen


def test_a_batch_whose_every_article_waits_for_an_original_is_not_run_one_message_at_a_time(redis_client,
                                                                                              monkeypatch):
    """Nothing in it could be decided: each retry is one attempt of the batch, not one per message as well."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    held = article(1)
    c, b = (Pipeline(Settings(), redis_client, namespace, live=True, extractor=FakeExtractor()) for _ in range(2))
    try:
        _claim(c, held)
        copies = [{**held, "id": f"c{n}", "url": f"https://mirror{n}.example/1"} for n in range(3)]
        alone = []
        monkeypatch.setattr(b, "_process_alone", lambda msg: alone.append(msg) or [])
        with pytest.raises(OriginalPending):
            b.process(incoming(copies))
        assert alone == [] and b.extractor.calls == []
    finally:
        c.drop_state()


def test_an_id_twice_in_a_batch_whose_decision_was_stored_but_not_published_goes_out_once(pipeline):
    """A worker decided it and was killed before publishing; the producer had sent it twice."""
    first = pipeline.process(incoming([article(1)]))
    again = pipeline.process(incoming([article(1), article(1)]))
    assert again[0].decision == again[1].decision == first[0].decision
    assert len(again[0].events) == 1 and not again[0].redelivered
    assert again[1].events == [] and again[1].redelivered


def test_redelivery_returns_the_stored_decision_and_emits_only_unacknowledged_events(pipeline):
    first = pipeline.process(incoming([article(1)]))
    again = pipeline.process(incoming([article(1)]))
    assert again[0].decision == first[0].decision
    assert [e.version for e in again[0].events] == [e.version for e in first[0].events]  # never acknowledged
    assert not again[0].redelivered  # its events go out for the first time: counted as decided there
    pipeline.confirm_published(first)
    third = pipeline.process(incoming([article(1)]))
    assert third[0].events == [] and third[0].redelivered and third[0].decision == first[0].decision


def test_a_name_dense_article_s_event_fits_the_story_topic_and_its_decision_keeps_every_entity(redis_client):
    """Story events are bounded by SW_EVENT_MAX_BYTES (a refused event would stall its batch for good); the first
    entities are kept, the decision (and so a copy's entities) keeps them all, and a redelivery gets the same."""

    class DenseExtractor:
        def extract(self, docs):
            return [[Entity(text=f"Nation{i}", label="GPE", start=9 * i, end=9 * i + 7, canonical=f"Nation{i}",
                            field="text") for i in range(3000)] for _ in docs]

    p = Pipeline(Settings(event_max_bytes=65536), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=False,
                 extractor=DenseExtractor())
    try:
        first = p.process(incoming([article(1)]))
        event = first[0].events[0]
        assert len(event.model_dump_json().encode()) <= 65536 and event.article.entities_truncated
        assert 0 < len(event.article.entities) < 3000 and len(first[0].decision.entities) == 3000
        again = p.process(incoming([article(1)]))
        assert again[0].events == first[0].events
    finally:
        p.drop_state()


def test_a_batch_run_writes_an_error_line_for_an_invalid_line_whose_id_cannot_be_written(redis_client, tmp_path):
    """An id with a lone surrogate (valid JSON, not valid UTF-8) is left out of the error line; the run goes on."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps(article(1)) + "\n" + '{"id": "\\ud800", "title": "no url"}\n' + json.dumps(article(2))
                   + "\n")
    run_batch(Settings(), redis_client, src, out, chunk=8, extractor=FakeExtractor())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("id") for line in lines] == ["a1", None, "a2"]
    assert lines[1]["error"].startswith("invalid:") and lines[0]["story_id"] and lines[2]["story_id"]


def test_a_batch_run_reads_past_a_byte_order_mark_and_blank_lines_and_writes_a_file_others_may_read(
        redis_client, tmp_path):
    """An editor's UTF-8 BOM does not cost the first article; a blank line gets an error line of its own; the
    output gets the permissions the umask gives a new file (not the 0600 of the file written aside)."""
    import os
    import stat

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(article(1)).encode() + b"\n   \n" + json.dumps(article(2)).encode())
    old = os.umask(0o022)
    try:
        run_batch(Settings(), redis_client, src, out, chunk=8, extractor=FakeExtractor())
    finally:
        os.umask(old)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("id") for line in lines] == ["a1", None, "a2"] and lines[0]["story_id"]
    assert lines[1]["error"] == "invalid: empty message (nothing but whitespace)"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_non_english_articles_skip_ner_but_are_clustered(pipeline):
    results = pipeline.process(incoming([article(1, language="fr")]))
    assert results[0].decision.entities == [] and results[0].ner_skipped_language == "fr"
    assert results[0].decision.story_id
    assert pipeline.extractor.calls == []
    # decided, not published (the attempt failed after deciding, or the batch waited): the retry's replay is
    # still counted as a non-English article
    again = pipeline.process(incoming([article(1, language="fr")]))
    assert not again[0].redelivered and again[0].ner_skipped_language == "fr"


def test_a_batch_is_tagged_in_chunks_each_reporting_progress(redis_client):
    """NER and clustering time grow with the texts: the liveness heartbeat beats after each chunk and for each
    article clustered, not only between batches."""
    beats = []
    pipeline = Pipeline(Settings(ner_batch_size=2), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=False,
                        extractor=FakeExtractor(), progress=lambda: beats.append(len(pipeline.extractor.calls)))
    try:
        topics = ["ferry timetable", "bridge repairs", "school budget", "harbour dredging", "library hours"]
        docs = [article(n, title=f"Town{n} {topic} changes", text=f"The council of town {n} voted on {topic} "
                        f"after {n + 2} months of debate among {30 + n} residents.") for n, topic in enumerate(topics)]
        results = pipeline.process(incoming(docs))
        assert [len(call) for call in pipeline.extractor.calls] == [2, 2, 1]
        # after dedup, after each NER chunk, for each article weighed and assigned (5 + 5), after clustering
        assert beats == [0, 1, 2, 3] + [3] * 11
        assert [[e.canonical for e in r.decision.entities] for r in results] == [[f"Town{n}"] for n in range(5)]
    finally:
        pipeline.drop_state()


def test_a_failing_progress_callback_does_not_make_the_batch_poison(redis_client):
    """A heartbeat file that cannot be written is no property of the articles: they are decided, not
    dead-lettered one by one as if they had made processing fail."""
    def unwritable():
        raise PermissionError("heartbeat file not writable")

    pipeline = Pipeline(Settings(), redis_client, f"test-{uuid.uuid4().hex[:8]}", live=False,
                        extractor=FakeExtractor(), progress=unwritable)
    try:
        results = pipeline.process(incoming([article(1)]))
        assert results[0].dead_letter is None and results[0].decision.story_id
    finally:
        pipeline.drop_state()


def test_duplicate_reuses_its_originals_entities_without_ner(pipeline):
    original = article(1)
    copy = {**original, "id": "copy", "url": "https://other.example/x?utm_source=rss", "source": "other"}
    results = pipeline.process(incoming([original, copy]))
    assert results[1].decision.duplicate_of == "a1"
    assert results[1].decision.story_id == results[0].decision.story_id
    assert [e.canonical for e in results[1].decision.entities] == ["Town1"]
    shifted = {**original, "id": "copy2", "url": "https://third.example/y", "title": "Wire: " + original["title"]}
    moved = pipeline.process(incoming([shifted]))[0].decision
    assert moved.duplicate_of == "a1" and [(e.start, e.end) for e in moved.entities] == [(6, 11)]
    assert pipeline.extractor.calls == [[original["title"]]]


def test_missing_or_absurd_dates_fall_back_to_the_previous_articles_time(pipeline):
    docs = [article(1), article(2, published_at=None, id="nodate"), article(3, published_at="1970-01-01", id="old")]
    results = pipeline.process(incoming(docs))
    seen = [r.events[0].story.first_seen for r in results]
    assert seen[1] == seen[0] == seen[2]


def test_a_batch_run_leaves_no_key_that_outlives_a_week(pipeline):
    """A batch run killed before it drops its namespace leaves keys that expire a week after their last write,
    the document frequencies included (live, those are kept for two generations of event time)."""
    pipeline.process(incoming([article(1), article(2)]))
    keys = list(pipeline.client.scan_iter(match=f"sw:*{pipeline.stories.namespace}*"))
    assert any(b":df:" in k for k in keys)
    assert all(0 < pipeline.client.ttl(k) <= 7 * 86_400 for k in keys)


def test_a_broker_timestamp_is_trusted_only_when_plausible(pipeline):
    """A producer whose clock is a year ahead (or that writes microseconds) must not move the clocks that only
    go forward: the article takes the previous article's time instead."""
    now = dt.datetime.now(dt.timezone.utc)
    march_15 = dt.datetime(2026, 3, 15, 8, tzinfo=dt.timezone.utc).timestamp()
    docs = incoming([article(1), article(2, published_at=None, id="ahead"), article(3, published_at=None, id="micro"),
                     article(4, published_at=None, id="fine")])
    docs[1] = dataclasses.replace(docs[1], fallback_time=(now + dt.timedelta(days=365)).timestamp())
    docs[2] = dataclasses.replace(docs[2], fallback_time=now.timestamp() * 1000)
    docs[3] = dataclasses.replace(docs[3], fallback_time=march_15)
    seen = [r.events[0].story.last_seen.timestamp() for r in pipeline.process(docs)]
    assert seen[1] == seen[2] == seen[0] == dt.datetime(2026, 3, 11, 8, tzinfo=dt.timezone.utc).timestamp()
    assert seen[3] == march_15


def test_a_dateless_article_takes_the_same_time_whether_its_batch_was_tried_whole_first_or_not(pipeline):
    """A failed attempt (a poison message, then one at a time) must not move the fallback time forward."""
    first = pipeline.process(incoming([article(1, published_at="2026-03-10T08:00:00Z")]))
    dateless = article(2, published_at=None, id="nodate")
    results = pipeline.process(incoming([dateless, article(3, title="POISON x", published_at="2026-03-19T08:00:00Z")]))
    assert results[1].dead_letter is not None
    story = results[0].events[0].story  # of article 1, which it joins, or its own
    assert story.last_seen == first[0].events[0].story.last_seen  # March 10, the time before, not March 19


def test_an_update_waits_for_its_original_while_another_replica_decides_it(redis_client, pipeline):
    """Same URL, new content, while the first version is between its dedup claim and its story: the update
    waits (the batch is retried) instead of being counted as a new article."""
    other = Pipeline(Settings(), redis_client, pipeline.stories.namespace, live=False, extractor=FakeExtractor())
    original = article(1)
    update = {**original, "id": "a1-v2", "text": original["text"] + "The timetable was corrected on Friday."}
    results = {}
    items = other.validate(incoming([original]), results)
    other.deduplicate(items)  # the other replica has claimed the article; its story is not assigned yet
    with pytest.raises(OriginalPending):
        pipeline.process(incoming([update]))
    other.enrich(items)
    other.cluster(items)
    other.record(items, results)
    decided = pipeline.process(incoming([update]))[0].decision
    assert (decided.update_of, decided.story_id) == ("a1", results[0].decision.story_id)


def test_batch_decisions_do_not_depend_on_how_the_input_is_cut(redis_client, tmp_path):
    """New reports, copies, an update that changes what a later report is scored against, and an update of a
    copy (same URL as the copy, new content), which must find the copy's record whichever batch holds it."""
    first = article(1, title="Lisbon ferry timetable changes")
    docs = [first, article(2), {**first, "id": "copy", "url": "https://copies.example/1", "source": "copier"},
            {**first, "id": "a1-v2", "title": "Porto ferry timetable changes",
             "text": "Porto harbour authority corrects its ferry timetable for the summer. " * 3},
            {**article(3), "title": "Porto ferry timetable corrected",
             "text": "The Porto harbour authority corrected the ferry timetable again on Friday. " * 3},
            article(4), {**article(2), "id": "copy2", "url": "https://copies.example/2", "source": "copier"},
            {**first, "id": "copy-v2", "url": "https://copies.example/1", "source": "copier",
             "text": first["text"] + "The copier added a paragraph of its own on the ferry fares."}]
    outs = decisions_by_cut(redis_client, tmp_path, docs, (1, 3, 64))
    assert outs[1] == outs[3] == outs[64]
    decided = {d["id"]: d for d in outs[1]}
    assert decided["a1-v2"]["update_of"] == "a1" and decided["copy"]["duplicate_of"] == "a1"
    assert decided["copy-v2"]["update_of"] == "copy" and decided["copy-v2"]["story_id"] == decided["copy"]["story_id"]


def test_a_dead_letter_is_offered_until_acknowledged_then_never_again(pipeline):
    """A batch retried after its publish failed offers its dead letters again; once they are acknowledged, a
    retry or a redelivery of the same input record does not dead-letter it a second time."""
    docs = [b"{not json", article(1)]
    assert pipeline.process(incoming(docs))[0].dead_letter is not None
    again = pipeline.process(incoming(docs))
    assert again[0].dead_letter is not None
    pipeline.confirm_published(again)
    third = pipeline.process(incoming(docs))
    assert third[0].dead_letter is None and third[0].redelivered and third[0].decision.error.startswith("not_json")
    other_offset = Incoming(value=b"{not json", source=SourceRecord(topic="t", partition=0, offset=9, timestamp=None))
    assert pipeline.process([other_offset])[0].dead_letter is not None  # another record with the same bytes
    recreated = Incoming(value=b"{not json", source=SourceRecord(topic="t", partition=0, offset=0, timestamp=17))
    assert pipeline.process([recreated])[0].dead_letter is not None  # the same offset of a topic created anew


def test_a_copy_s_event_time_moves_the_clock_for_the_reports_after_it_whatever_the_batch_cut(redis_client, tmp_path):
    """The copy comes last within its batch, yet the active window of the report after it ends where the
    copy's time put the clock, as it does when the report comes in a later batch."""
    day = lambda n: (dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc) + dt.timedelta(days=n)).isoformat()  # noqa: E731
    first = article(1, published_at=day(16))
    other = article(2, published_at=day(255), title="Quarry blast shakes Millbrook",
                    text="A blast at the Millbrook quarry broke windows in twelve houses on Elm Row. " * 3)
    docs = [first, other, {**other, "id": "copy", "url": "https://copies.example/2", "published_at": day(261)},
            {**article(3), "title": first["title"], "published_at": day(17),
             "text": "The harbour authority of town 1 changed its ferry timetable again after complaints. " * 3}]
    outs = decisions_by_cut(redis_client, tmp_path, docs, (1, 64))
    assert outs[1] == outs[64]
    decided = {d["id"]: d for d in outs[1]}
    assert decided["copy"]["duplicate_of"] == "a2"
    assert decided["a3"]["story_id"] != decided["a1"]["story_id"]  # a1's story left the window at day 261 - 240


def test_a_batch_whose_attempt_failed_after_deciding_counts_its_articles_as_decided_once(pipeline):
    """Redis fails after the decisions were stored: the retry publishes them for the first time, so the stats
    line counts them as articles (not as redelivered), and the dead letter once."""
    real, calls = pipeline.decisions.letters_published, []

    def blip_once(sources):
        calls.append(sources)
        if len(calls) == 1:
            raise redis_lib.ConnectionError("Redis blip")
        return real(sources)

    pipeline.decisions.letters_published = blip_once
    values = [json.dumps(article(n)).encode() for n in range(1, 5)] + [b"{not json"]
    records = [SimpleNamespace(topic="in", partition=0, offset=i, value=v, key=None, headers=[], timestamp=0)
               for i, v in enumerate(values)]
    commits = []
    consumer = SimpleNamespace(assignment=lambda: {TopicPartition("in", 0)}, paused=set, pause=lambda *a: None,
                               resume=lambda *a: None, poll=lambda **k: {},
                               commit=lambda offsets, timeout_ms=None: commits.append(offsets))
    worker = StreamWorker(Settings(retry_initial_s=0.01), pipeline, publisher=SimpleNamespace(publish=list))
    worker._handle(consumer, records, SimpleNamespace(revoked=set()))
    assert len(calls) == 2 and len(commits) == 1
    stats = worker.stats.snapshot()
    assert (stats["articles"], stats["dead_letters"], stats["redelivered"], stats["retries"]) == (4, 1, 0, 1)
    assert stats["new_stories"] >= 1


def test_a_batch_run_that_fails_leaves_no_output_file_and_raises_its_own_error(tmp_path):
    """Redis unreachable throughout: no partial output that looks whole, and the cleanup's failure (a warning
    naming the namespace, whose keys expire) does not hide why the run failed."""
    from worker.errors import DependencyUnavailable

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(article(n)) + "\n" for n in range(3)))
    dead = redis_lib.Redis(port=1, socket_connect_timeout=0.5)
    with pytest.raises(DependencyUnavailable, match="Redis unavailable"):
        run_batch(Settings(), dead, src, out, attempts=1, extractor=FakeExtractor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_batch_mode_state_expires_if_a_run_is_killed_before_its_cleanup(redis_client, pipeline):
    pipeline.process(incoming([article(1)]))
    keys = list(redis_client.scan_iter(match=f"sw:{{{pipeline.stories.namespace}}}:*"))
    ttls = {k: redis_client.ttl(k) for k in keys}
    assert keys and all(t > 0 for t in ttls.values()), ttls  # none left for ever (-1)
    assert max(t for k, t in ttls.items() if b":df:" not in k) <= 7 * 86400

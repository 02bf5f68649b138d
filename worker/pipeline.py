"""The one straight path of an article: validate -> identify -> dedup -> enrich -> cluster -> decide.

Shared by the Kafka stream loop and offline batch mode. Each stage handles the whole batch at once (one Redis
round trip or Lua call per stage, NER through the model's batch API). Every stage is idempotent per article id,
so a batch retried after a crash or an outage gives the same decisions and no double counts.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable

import redis
import structlog

from . import __version__
from .adapters.decision_log import DecisionLog
from .adapters.dedup_index import DedupIndex
from .adapters.story_store import StoreConflict, StoryStore, UnknownArticle
from .core.cluster import ClusterConfig, ClusterInput, StoryChange
from .core.dedup import DedupInput, DedupOutcome
from .core.entities import MAX_FIELD_CHARS as _NER_FIELD_CHARS
from .core.entities import Entity, EntityExtractor, relocate
from .core.normalize import article_id_for, canonical_url
from .errors import DependencyUnavailable, InvalidMessage, StopRequested, WorkerBroken
from .models import (Article, ArticleRef, DeadLetter, Decision, EntityOut, SourceRecord, StoryEvent, StoryState,
                     plausible)
from .settings import Settings
from .validation import parse_article

log = structlog.get_logger()
_DAY = 86400
_BATCH_TTL = 7 * _DAY
# A chunk of NER holds at most this many characters: 32 articles of 100,000 characters (the most of a field the
# model reads) took 3.3 GB and a minute between heartbeats.
_NER_CHUNK_CHARS = 400_000
# A plain article the models must handle: when they fail on it too, the worker is broken, not the message
_PROBE = ("Storm closes harbour", "The harbour master of Penwick closed the outer quay on Monday after a storm.")


@dataclass(frozen=True)
class Incoming:
    """One message to process: its bytes, where it came from, and a time to fall back on."""

    value: bytes | None
    source: SourceRecord
    fallback_time: float | None = None  # broker timestamp (live); None: the previous article's time (batch)
    unreadable: str | None = None  # the client could not decode the record (why): dead-lettered, no bytes


@dataclass
class Result:
    """What became of one message."""

    decision: Decision
    events: list[StoryEvent] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    # Decided and published before (a redelivery): counted once, where its events first went out. A decision
    # stored but never acknowledged published (an attempt that failed after deciding, a worker killed before
    # publishing) is not redelivered: its events go out now, for the first time.
    redelivered: bool = False
    ner_skipped_language: str | None = None


@dataclass
class _Item:
    """A valid article travelling through the stages."""

    index: int
    article: Article
    article_id: str
    url: str
    event_time: float
    dedup: DedupOutcome | None = None
    entities: list[Entity] = field(default_factory=list)
    change: StoryChange | None = None
    skipped_language: str | None = None  # NER skipped: not English
    orphan: bool = False                 # a copy or update whose original was dead-lettered: clustered as new

    @property
    def original(self) -> str | None:
        """The article this one is a copy or an update of (after dedup)."""
        return self.dedup.duplicate_of or self.dedup.update_of

    @property
    def needs(self) -> set[str]:
        """Records it needs: its original's, and for an update named through a copy at its URL, that copy's
        (the version the story holds when the one it copies was dead-lettered)."""
        return {a for a in (self.original, self.dedup.matched.get("url_record")) if a}


class OriginalPending(DependencyUnavailable):
    """A duplicate's or an update's original is being processed by another replica right now; retry shortly.
    `others`: the batch holds articles that wait for no such original."""

    def __init__(self, message: str, others: bool = False):
        super().__init__(message)
        self.others = others


class Pipeline:
    """Stateless apart from Redis: any number of replicas may run it on the same namespace."""

    def __init__(self, settings: Settings, client: redis.Redis, namespace: str, *, live: bool,
                 extractor: EntityExtractor, cluster_config: ClusterConfig | None = None, embedder=None,
                 progress: Callable[[], None] | None = None):
        # Live mode: state expires a day after its event-time window (wall clock bounds memory); batch mode
        # keeps its namespace for the run and deletes it at the end, and a run killed before that leaves keys
        # that expire a week after their last write.
        dedup_ttl = int(settings.dedup_window_s) + _DAY if live else _BATCH_TTL
        story_ttl = int(settings.story_window_s) + _DAY if live else _BATCH_TTL
        self.settings = settings
        self.live = live
        self.extractor = extractor
        self.dedup = DedupIndex(client, namespace, dedup_ttl, settings.dedup_window_s)
        # `cluster_config` and `embedder` are for measurement (bench/ablate_cluster.py); the worker uses settings.
        config = cluster_config or (ClusterConfig() if settings.story_embeddings else ClusterConfig(embed_weight=0.0))
        self.stories = StoryStore(client, namespace, story_ttl, settings.story_window_s, config=config,
                                  embedder=embedder, embedding_threads=settings.embedding_threads,
                                  frequencies_ttl_seconds=None if live else _BATCH_TTL, epoch_ids=live,
                                  progress=self._beat)
        self.decisions = DecisionLog(client, namespace, dedup_ttl)
        self.client = client
        # Called between stages, after each NER chunk and for each article clustered: their time grows with the
        # length of the texts, so a batch of long articles beats the liveness heartbeat while it is processed,
        # not only between batches.
        self._progress = progress or (lambda: None)
        # Live: whether the worker was asked to stop (set by StreamWorker); checked between NER chunks.
        self.stop_requested: Callable[[], bool] = lambda: False
        self._last_time: float | None = None
        self._pending_since: dict[str, float] = {}  # originals of duplicates not decided yet (another replica)
        self._redis_run_id: str | None = None
        self._process_id = uuid.uuid4().hex  # tells this process's attempts at a message from a stopped one's

    def process(self, batch: list[Incoming]) -> list[Result]:
        """Decide every message of the batch; raise DependencyUnavailable (retriable) and nothing is lost.

        A message that makes processing fail for any other reason (a poison message) is isolated by
        processing the batch one message at a time, and dead-lettered with error class `processing`.
        """
        last_time = self._last_time  # the fallback time of a dateless article: a failed attempt leaves it be
        try:
            return self._without_letters_published(self._decide(batch, last_time))
        except DependencyUnavailable:
            self._last_time = last_time  # retried: its dateless articles fall back to the same time again
            raise

    def _decide(self, batch: list[Incoming], last_time: float | None) -> list[Result]:
        stopped = self._begin(batch)
        try:
            if stopped:  # a worker stopped with this batch in hand: whatever stopped it is found one by one
                log.warning("batch_isolated_after_stop", records=len(batch), workers_stopped=stopped)
                return self._one_at_a_time(batch)
            try:
                with _redis_failures():
                    return self._process(batch)
            except OriginalPending as pending:
                if not pending.others:
                    raise
                # The rest of the batch is decided before it waits: its articles are claimed, and a replica whose
                # copy needs one of them would wait for this batch while this batch (grown by a retry) waits for it.
                self._last_time = last_time
                return self._one_at_a_time(batch)
        except (DependencyUnavailable, WorkerBroken):
            raise
        except Exception:  # noqa: BLE001 - anything else is a property of some message: find it
            log.exception("batch_failed_isolating", records=len(batch))
            self._last_time = last_time
            return self._one_at_a_time(batch)

    def _begin(self, batch: list[Incoming]) -> int:
        """Live: record that this process began the batch; the most worker processes that began one holding one
        of its messages and stopped (killed, out of memory, `WorkerBroken`) before publishing it."""
        if not self.live:
            return 0
        with _redis_failures():
            return max(self.decisions.begin([m.source for m in batch], self._process_id), default=0)

    def _one_at_a_time(self, batch: list[Incoming]) -> list[Result]:
        """Each message alone, in the order the whole batch would decide them (live: event time, as `_process`
        sorts them), each with the event time the whole batch gives it (a dateless article: the time of the
        article before it in input order); one whose original is not decided yet is tried again after the
        rest: a batch that failed whole may have made a copy of an article that comes after it (another
        partition), and only this pass decides that article now."""
        times, before, after = self._input_times(batch)
        order = sorted(range(len(batch)), key=times.__getitem__) if self.live else list(range(len(batch)))
        results: dict[int, list[Result]] = {}
        waiting: list[int] = []
        for position, index in enumerate(order):
            if position and self.stop_requested():  # given up alive: the next owner runs the pass again
                raise StopRequested(f"stop requested with {len(batch)} messages being run one at a time")
            self._last_time = before[index]
            try:
                results[index] = self._process_alone(batch[index])
            except OriginalPending:
                waiting.append(index)
        for index in waiting:  # still pending: another replica holds the original (the batch is retried)
            self._last_time = before[index]
            results[index] = self._process_alone(batch[index])
        self._last_time = after
        out: list[Result] = []
        decided: set[str] = set()
        for result in (result for index in range(len(batch)) for result in results[index]):
            article = result.decision.id if not result.dead_letter else None
            if article in decided:  # an id twice: its events go out once, with the first (as in `_replay_known`)
                result = Result(decision=result.decision, redelivered=True)
            elif article:
                decided.add(article)
            out.append(result)
        return out

    def _input_times(self, batch: list[Incoming]) -> tuple[list[float], list[float | None], float | None]:
        """As `validate` computes them for the whole batch, in input order: each message's event time (-inf: no
        article, decided first), the previous article's time each one falls back on, and the last one."""
        saved, now = self._last_time, dt.datetime.now(dt.timezone.utc)
        times: list[float] = []
        before: list[float | None] = []
        for msg in batch:
            before.append(self._last_time)
            try:
                article = self._parse(msg)
            except InvalidMessage:
                times.append(-math.inf)
                continue
            times.append(self._event_time(article, msg, now))
        after, self._last_time = self._last_time, saved
        return times, before, after

    def _without_letters_published(self, results: list[Result]) -> list[Result]:
        """A message dead-lettered before (its batch retried or redelivered) is not dead-lettered again."""
        sources = _stream_letters(results)
        if not sources:
            return results
        with _redis_failures():
            published = self.decisions.letters_published(sources)
        return [replace(r, dead_letter=None, redelivered=True)
                if r.dead_letter and _where(r.dead_letter.source) in published else r for r in results]

    def _process_alone(self, msg: Incoming) -> list[Result]:
        if self.live:
            with _redis_failures():
                stopped = self.decisions.begin_alone(msg.source, self._process_id)
        else:
            stopped = 0
        if stopped >= self.settings.crash_limit:
            log.error("message_stopped_workers", workers_stopped=stopped, offset=msg.source.offset,
                      partition=msg.source.partition)
            # its count stays: a batch retried, or the record redelivered, does not run it again
            return self._poison(msg, f"the worker stopped {stopped} times while processing this message alone "
                                     "(killed, out of memory, or its models broke): not processed again")
        try:
            with _redis_failures():
                results = self._process([msg])
        except DependencyUnavailable:
            self._unmark([msg.source], batch=False)  # given up alive, for now (a retry): it stopped no worker
            raise
        except Exception as exc:  # noqa: BLE001 - the poison message itself, unless the models broke
            if not self._models_work():
                raise WorkerBroken(f"the models fail on a plain article too, after {exc!r}") from exc
            log.error("poison_message", error=repr(exc), offset=msg.source.offset, partition=msg.source.partition)
            results = self._poison(msg, f"processing failed: {exc!r}")
        if self.live:  # it stopped no worker
            with _redis_failures():
                self.decisions.finish_alone(msg.source)
        return results

    def abandon(self, sources: list[SourceRecord]) -> None:
        """This process gives a batch's records up alive (their partition moved, a stop in an outage): the next
        to begin them must not count it as a worker they stopped. (The waits for originals keep their start: a
        wait begun afresh at every rebalance could hold a partition for ever.)"""
        self._unmark(sources)

    def _unmark(self, sources: list[SourceRecord], batch: bool = True) -> None:
        """Live: this process's crash-guard marks on the records taken back: the marks of their runs alone, and
        of their batch too unless not `batch` (the rest of the batch is still in hand). Best effort: in a Redis
        outage they stay, and the next worker runs the batch one message at a time."""
        if not self.live or not sources:
            return
        try:
            self.decisions.abandon(sources, self._process_id, batch)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            log.warning("abandon_unrecorded", records=len(sources), reason=f"{type(exc).__name__}: {exc}")

    def _poison(self, msg: Incoming, reason: str) -> list[Result]:
        """A valid or invalid message dead-lettered because processing it failed (error class `processing`)."""
        letter = DeadLetter.build(msg.value or b"", error_class="processing", reason=reason, source=msg.source,
                                  worker_version=__version__, max_bytes=self.settings.dead_letter_max_bytes)
        decision = Decision(id=_guess_id(msg.value, self.settings.max_message_bytes), error=f"processing: {reason}")
        self._record_poison(msg, decision)
        return [Result(decision=decision, dead_letter=letter)]

    def _models_work(self) -> bool:
        """Whether NER and the embedding still run on a plain article. When they do not, the worker is broken,
        not the message: dead-lettering would send every article after it to the dead letters too."""
        try:
            self.extractor.extract([_PROBE])
            self.stories.embed_probe(*_PROBE)
        except Exception:  # noqa: BLE001 - whatever broke them
            log.exception("models_failed")
            return False
        return True

    def _record_poison(self, msg: Incoming, decision: Decision) -> None:
        """A valid article that made processing fail may already hold its dedup claim: its copies and updates
        would wait for its decision (`_originals`) each time. Its record, marked dead-lettered, tells them it
        will never come (they go on without it); a redelivery of the article itself ignores it. When dedup had
        found it an update, the record keeps the version it updated (a dead one's, if that one was dead too):
        its own updates update that one."""
        try:
            article = self._parse(msg)
        except InvalidMessage:
            return
        aid = article_id(article)
        record = {**self._record(Result(decision=decision)), "dead_lettered": True}
        # the event time it was decided at: as computed now, or as it may have been then (a date that was not yet
        # plausible, the broker timestamp)
        times = {self._event_time(article, msg, dt.datetime.now(dt.timezone.utc), remember=False)}
        times |= {t for t in (article.published_at.timestamp() if article.published_at else None,
                              msg.fallback_time) if t is not None}
        with _redis_failures():
            stored = next(filter(None, (self.dedup.stored_outcome(aid, t) for t in sorted(times))), None)
            update_of = stored.update_of if stored is not None else None
            if update_of:
                before = self.decisions.load([update_of]).get(update_of) or {}
                record["update_of"] = before.get("update_of") if before.get("dead_lettered") else update_of
            self.decisions.save({aid: record})

    def confirm_published(self, results: list[Result], sources: list[SourceRecord] = ()) -> None:
        """Record that the batch's events and dead letters are acknowledged, so a redelivery emits nothing new,
        and that its input records (`sources`, live) stopped no worker."""
        with _redis_failures():
            if self.live:
                self.decisions.finish(sources, self._process_id)
            self.decisions.mark_published({r.decision.id: self._record(r) for r in results
                                           if r.decision.id and not r.dead_letter and r.events})
            self.decisions.mark_letters_published(_stream_letters(results))

    def close_expired(self) -> list[StoryEvent]:
        """story_closed events for stories that left the active window, until `confirm_closed` after publish."""
        with _redis_failures():
            return [self._event(change, None) for change in self.stories.close_expired()]

    def confirm_closed(self, events: list[StoryEvent]) -> None:
        with _redis_failures():
            self.stories.confirm_closed([e.story_id for e in events])

    def check_redis_identity(self) -> None:
        """Warn when Redis restarted since the last check: without persistence its state is gone."""
        with _redis_failures():
            info = self.client.info("server")
        run_id = info.get("run_id") if isinstance(info, dict) else None
        if run_id and self._redis_run_id and run_id != self._redis_run_id:
            log.warning("redis_restarted", previous_run_id=self._redis_run_id, run_id=run_id,
                        consequence="dedup fingerprints, story state and decision records written before are lost "
                                    "unless Redis persists (AOF) or failed over to a replica")
        self._redis_run_id = run_id or self._redis_run_id

    def drop_state(self) -> None:
        """Delete all Redis state of this namespace (batch mode)."""
        self.dedup.drop()
        self.stories.drop()
        self.decisions.drop()

    # -- stages -------------------------------------------------------------------------------------------

    def _process(self, batch: list[Incoming]) -> list[Result]:
        results: dict[int, Result] = {}
        items = self.validate(batch, results)
        fresh, repeats = self._replay_known(items, results)
        if self.live:  # a batch spans partitions: within it, earlier-published articles are the originals
            fresh.sort(key=lambda it: it.event_time)
        if fresh:
            self.deduplicate(fresh)
            stored = self._stored_originals(fresh)  # waits (raises) before any NER
            self._beat()
            self.enrich(fresh, stored)
            self.cluster(fresh)
            self._beat()
            self.record(fresh, results)
            self._waits_ended(fresh, stored)
        for index, original in repeats:
            results[index] = Result(decision=results[original.index].decision, redelivered=True)
        return [results[i] for i in range(len(batch))]

    def validate(self, batch: list[Incoming], results: dict[int, Result]) -> list[_Item]:
        items: list[_Item] = []
        now = dt.datetime.now(dt.timezone.utc)
        for index, msg in enumerate(batch):
            try:
                article = self._parse(msg)
            except InvalidMessage as exc:
                results[index] = Result(
                    decision=Decision(id=_guess_id(msg.value, self.settings.max_message_bytes),
                                      error=f"{exc.error_class}: {exc.reason}"),
                    dead_letter=DeadLetter.build(msg.value or b"", error_class=exc.error_class, reason=exc.reason,
                                                 source=msg.source, worker_version=__version__,
                                                 max_bytes=self.settings.dead_letter_max_bytes))
                continue
            url = canonical_url(article.url)
            event_time = self._event_time(article, msg, now)
            items.append(_Item(index, article, article_id(article), url, event_time))
        return items

    def _parse(self, msg: Incoming) -> Article:
        """The message's article; InvalidMessage (its error class and reason) when there is none."""
        if msg.unreadable is not None:
            raise InvalidMessage("unreadable", msg.unreadable)
        return parse_article(msg.value, max_bytes=self.settings.max_message_bytes,
                             max_text_chars=self.settings.max_text_chars)

    def _event_time(self, article: Article, msg: Incoming, now: dt.datetime, remember: bool = True) -> float:
        """published_at when plausible, else the broker timestamp (live) when plausible, else the previous
        article's time (a producer's clock can be as wrong as a scraper's); `remember`: as the previous one."""
        if article.plausible_time(now):
            t = article.published_at.timestamp()
        elif msg.fallback_time is not None and plausible(msg.fallback_time, now):
            t = msg.fallback_time
        else:
            t = self._last_time if self._last_time is not None else now.timestamp()
        if remember:
            self._last_time = t
        return t

    def _replay_known(self, items: list[_Item], results: dict[int, Result]) -> tuple[list[_Item], list[tuple[int, _Item]]]:
        """Articles decided before (redelivery) get their stored decision; events again only if never acked.

        Returns the articles to decide now, and repeats of one of those within this batch (index, first).
        """
        stored = self.decisions.load(sorted({it.article_id for it in items}))
        fresh: list[_Item] = []
        repeats: list[tuple[int, _Item]] = []
        first: dict[str, _Item] = {}
        for it in items:
            record = stored.get(it.article_id)
            if it.article_id in first:  # its events go out once, with the first
                repeats.append((it.index, first[it.article_id]))
            elif record is not None and not record.get("dead_lettered"):
                published = bool(record.get("published"))
                events = [] if published else [StoryEvent.model_validate(e) for e in record["events"]]
                results[it.index] = Result(decision=Decision.model_validate(record["decision"]), events=events,
                                           redelivered=published,
                                           ner_skipped_language=record.get("ner_skipped_language"))
                first[it.article_id] = it
            else:
                first[it.article_id] = it
                fresh.append(it)
        return fresh, repeats

    def deduplicate(self, items: list[_Item]) -> None:
        outcomes = self.dedup.check_and_insert([
            DedupInput(article_id=it.article_id, canonical_url=it.url, title=it.article.title,
                       text=it.article.text or "", event_time=it.event_time)
            for it in items])
        for it, outcome in zip(items, outcomes):
            it.dedup = outcome

    def enrich(self, items: list[_Item], stored: dict[str, dict] | None = None) -> None:
        """NER for new English articles; duplicates reuse their original's entities (`stored`: the records of
        those outside the batch, `_stored_originals`), but for the copies of a dead-lettered original (clustered
        as new articles: they are tagged)."""
        stored = self._stored_originals(items) if stored is None else stored
        self._tag([it for it in items if not it.dedup.duplicate_of])
        originals, dead = self._originals(items, stored)
        for it in items:
            if it.dedup.update_of in dead:
                # The URL's own last record (a copy of the dead-lettered version, clustered as an article of its
                # own), else the version before the dead-lettered one; with neither, a new article.
                held = it.dedup.matched.get("url_record")
                before = held if held and held not in dead else dead[it.dedup.update_of]
                if before:
                    it.dedup = replace(it.dedup, update_of=before)
                    continue
            it.orphan = it.original in dead
            if it.dedup.duplicate_of and not it.orphan:
                it.entities = relocate(originals[it.dedup.duplicate_of], it.article.title, it.article.text or "")
        self._tag([it for it in items if it.dedup.duplicate_of and it.orphan])

    def _tag(self, items: list[_Item]) -> None:
        to_tag: list[_Item] = []
        for it in items:
            lang = it.article.lang
            if lang and not lang.lower().startswith("en"):
                it.skipped_language = lang
                continue
            to_tag.append(it)
        for n, chunk in enumerate(_ner_chunks(to_tag, self.settings.ner_batch_size)):
            if n and self.stop_requested():  # between chunks: what is left of the batch waits for no stop
                raise StopRequested(f"stop requested with {len(to_tag)} articles of the batch in NER")
            for it, ents in zip(chunk, self.extractor.extract([(it.article.title, it.article.text or "")
                                                               for it in chunk])):
                it.entities = ents
            self._beat()

    def _beat(self) -> None:
        """The progress callback (touching the heartbeat file costs microseconds)."""
        try:
            self._progress()
        except Exception as exc:  # noqa: BLE001 - a heartbeat fault is no property of the articles (poison)
            log.warning("progress_failed", reason=repr(exc))

    def _stored_originals(self, items: list[_Item]) -> dict[str, dict]:
        """The records of the originals outside the batch that its copies and updates point at. One claimed by
        another replica but not decided yet is waited for (OriginalPending, the batch retried): a copy needs its
        entities, an update its story (else it would be counted as a new article). After `SW_ORIGINAL_WAIT_S` its
        record counts as gone (expired, or Redis lost its data): the copy goes on without it."""
        outside = {a for it in items for a in it.needs} - {it.article_id for it in items}
        stored = self.decisions.load(sorted(outside))
        now = time.monotonic()
        pending = {a for a in outside - stored.keys()
                   if now - self._pending_since.setdefault(a, now) < self.settings.original_wait_s}
        if pending:
            waiting: set[str] = set()
            while more := {it.article_id for it in items if it.needs & (pending | waiting)} - waiting:
                waiting |= more  # an article whose original (in the batch) waits, waits too
            others = any(it.article_id not in waiting for it in items)
            raise OriginalPending(f"original {min(pending)} of a duplicate or update is not decided yet", others)
        return stored

    def _waits_ended(self, items: list[_Item], stored: dict[str, dict]) -> None:
        """Once the batch's decisions are recorded, the waits for its originals end, and any for its own
        articles: an attempt that fails before that leaves a wait that ran out as it was (begun afresh, it would
        hold the batch `SW_ORIGINAL_WAIT_S` more at every failure)."""
        in_batch = {it.article_id for it in items}
        for it in items:
            self._pending_since.pop(it.article_id, None)
            for a in it.needs:
                if self._pending_since.pop(a, None) is not None and a not in stored and a not in in_batch:
                    log.warning("original_missing", original=a, waited_s=self.settings.original_wait_s)

    def _originals(self, items: list[_Item], stored: dict[str, dict]
                   ) -> tuple[dict[str, list[Entity]], dict[str, str | None]]:
        """Entities of every original a duplicate or an update in the batch points at (this batch's, or from
        `stored`; none for one whose record is gone), and which of them were dead-lettered, with the version each
        was an update of (they have no story: their copies are new articles, and so are their updates but for
        those of an update, which update the version before it)."""
        in_batch = {it.article_id: it for it in items}
        out = {a: in_batch[a].entities for a in in_batch}
        dead = {a: record.get("update_of") for a, record in stored.items() if record.get("dead_lettered")}
        for a, record in stored.items():
            if a in dead:
                log.warning("original_dead_lettered", original=a)
            out[a] = [Entity(**e) for e in record["decision"]["entities"]]
        for it in items:
            if it.original:
                out.setdefault(it.original, [])  # its record gone: without it
        return out, dead

    def cluster(self, items: list[_Item]) -> None:
        """In input order, as if the articles came one by one: runs of new articles are assigned together, and
        the duplicates before an update are added before it (an update changes what the next articles are
        scored against, and may update a copy, whose record it then needs); the other duplicates go last, and
        the one thing of theirs scoring reads, the clock, counts in the new articles after them all the same."""
        run: list[tuple[_Item, float]] = []  # with the largest event time of the copies before it
        copies: list[_Item] = []
        copied_until = -math.inf
        for it in items:
            if it.orphan:
                run.append((it, copied_until))
            elif it.dedup.update_of:
                self._assign(run)
                self._add_copies(copies)
                run, copies = [], []
                self._existing(it, lambda it=it: self.stories.update_article(self._cluster_input(it),
                                                                             it.dedup.update_of))
            elif it.dedup.duplicate_of:
                copies.append(it)
                copied_until = max(copied_until, it.event_time)
            else:
                run.append((it, copied_until))
        self._assign(run)
        self._add_copies(copies)

    def _add_copies(self, copies: list[_Item]) -> None:
        for it in copies:
            self._existing(it, lambda it=it: self.stories.add_duplicate(
                it.article_id, it.dedup.duplicate_of, it.article.source, it.event_time))

    def _assign(self, run: list[tuple[_Item, float]]) -> None:
        if run:
            changes = self.stories.assign([self._cluster_input(it) for it, _ in run], [t for _, t in run])
            for (it, _), change in zip(run, changes):
                it.change = change

    def _existing(self, it: _Item, change) -> None:
        """A change to the story of `it`'s original; when that story expired or was lost, `it` starts afresh."""
        try:
            it.change = change()
        except UnknownArticle as exc:
            log.warning("original_story_missing", article=it.article_id, reason=str(exc))
            it.change = self.stories.assign([self._cluster_input(it)])[0]

    @staticmethod
    def _cluster_input(it: _Item) -> ClusterInput:
        a = it.article
        return ClusterInput(article_id=it.article_id, title=a.title, text=a.text or "", source=a.source, url=it.url,
                            event_time=it.event_time, entities=it.entities, language=a.lang)

    def record(self, items: list[_Item], results: dict[int, Result]) -> None:
        """Results of the decided articles, stored as decision records (what a redelivery gets back)."""
        records = {}
        for it in items:
            results[it.index] = self._result(it)
            records[it.article_id] = self._record(results[it.index])
        self.decisions.save(records)

    # -- outputs ------------------------------------------------------------------------------------------

    def _result(self, it: _Item) -> Result:
        d = it.dedup
        entities = [EntityOut(**e.to_dict()) for e in it.entities]
        decision = Decision(id=it.article_id, story_id=it.change.story_id, duplicate_of=d.duplicate_of,
                            duplicate_kind=d.kind, similarity=d.similarity, story_score=it.change.score,
                            update_of=d.update_of, entities=entities)
        ref = ArticleRef(id=it.article_id, url=it.article.url, source=it.article.source, title=it.article.title,
                         published_at=it.article.published_at, entities=entities, duplicate_of=d.duplicate_of,
                         duplicate_kind=d.kind, similarity=d.similarity,
                         matched=d.matched if d.duplicate_of or d.update_of else None, update_of=d.update_of)
        return Result(decision=decision, events=[self._event(it.change, ref)],
                      ner_skipped_language=it.skipped_language)

    def _event(self, change: StoryChange, ref: ArticleRef | None) -> StoryEvent:
        return StoryEvent(story_id=change.story_id, version=change.version, event=change.action, article=ref,
                          score=change.score, runner_up=change.runner_up, shared_entities=change.shared_entities,
                          story=StoryState.model_validate(change.story), worker_version=__version__,
                          emitted_at=dt.datetime.now(dt.timezone.utc)).fitted(self.settings.event_max_bytes)

    @staticmethod
    def _record(result: Result) -> dict:
        return {"decision": result.decision.model_dump(mode="json"),
                "events": [e.model_dump(mode="json") for e in result.events], "published": False,
                "decided_at": time.time(), "ner_skipped_language": result.ner_skipped_language}


@contextlib.contextmanager
def _redis_failures():
    """Redis trouble is retriable: the batch is retried, nothing is committed."""
    try:
        yield
    # Unreachable, loading, read-only replica, out of memory, no cluster node answering: never the message.
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        # The message, not the repr: redis-py 8 reprs an error as its kind alone ("network:ConnectionError").
        raise DependencyUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
    except StoreConflict as exc:
        raise DependencyUnavailable(f"story state kept changing under this batch: {exc}") from exc


def _ner_chunks(items: list[_Item], size: int) -> list[list[_Item]]:
    """Chunks of at most `size` articles and `_NER_CHUNK_CHARS` characters (of what the model reads): the model's
    memory and the time between two heartbeats follow the characters of a chunk, not its articles."""
    chunks: list[list[_Item]] = []
    chars = 0
    for it in items:
        length = len(it.article.title) + min(len(it.article.text or ""), _NER_FIELD_CHARS)
        if not chunks or len(chunks[-1]) >= size or chars + length > _NER_CHUNK_CHARS:
            chunks.append([])
            chars = 0
        chunks[-1].append(it)
        chars += length
    return chunks


def _stream_letters(results: list[Result]) -> list[SourceRecord]:
    """Input records of the dead letters among `results` that came from a topic (batch mode has none)."""
    return [r.dead_letter.source for r in results if r.dead_letter and r.dead_letter.source.topic is not None]


def _where(source: SourceRecord) -> tuple:
    return source.topic, source.partition, source.offset, source.timestamp


def article_id(article: Article) -> str:
    """The upstream id, else canonical URL + content (the body, or the title of a headline-only item)."""
    return article.id or article_id_for(article.url, article.text, article.title)


def _guess_id(value: bytes | None, max_bytes: int) -> str | None:
    """The `id` of an invalid message when it can still be read, for the batch-mode error line. Not looked for in
    a message over `max_bytes`: parsing it is what the size limit spares (a compressed record can expand to many
    times the limit, and its JSON to many times that in memory)."""
    if value is not None and len(value) > max_bytes:
        return None
    try:
        data = json.loads((value or b"").decode("utf-8"))
        found = data.get("id") if isinstance(data, dict) else None
        return found if isinstance(found, str) and len(found) <= 512 and found.encode("utf-8") else None
    except (ValueError, RecursionError):  # not UTF-8 or JSON; an id with a lone surrogate cannot be written out
        return None

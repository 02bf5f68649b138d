"""Story state in Redis: candidate index, story states, atomic assignment.

Every key lives under `sw:{<namespace>}:` so that all of them share one hash slot and one Lua script may
touch any of them (Redis Cluster safe). Layout:

    clock            largest event time seen ("now")
    epoch            a token created with the first story (again after Redis lost its data), in every story id
    df:<g>           hash entity key or term -> articles carrying it, "#docs" -> articles, for generation g of
                     event time (`_DF_GENERATION_WINDOWS` story windows long): a decision reads the current
                     generation and the one before, so the frequencies cover the last one to two generations
                     and older ones expire (rarity needs many articles: shorter generations cost quality on
                     the sparse GVA set, 0.937 -> 0.933 BCubed at one window)
    embsum           hash "0".."383" -> integer sum of the lead embeddings seen (x127), "n" -> how many: their
                     mean is taken out before embedding cosines (only when the config weighs embeddings)
    idx:<key>        zset story id -> event time of the story's latest report when it was filed under the key
                     (copies and updates do not move it), for one entity key or title term (the candidate index)
    iver:<key>       version of idx:<key> (optimistic concurrency), expiring with it
    story:<id>       JSON story state (cluster.py), its version inside
    sver:<id>        that version again, for the commit script's check (no JSON decoding), expiring with it
    active           zset story id -> event time of its latest report, for closing stories that left the window:
                     the time the candidate index finds them by (a copy or an update, which moves `last_seen`,
                     does not keep open a story no report could join any more)
    closing          zset story id -> its closed version, for closed stories whose story_closed event is not yet
                     confirmed published
    closeclaim:<id>  the replica publishing that event (a token; expires after `_CLOSE_CLAIM_S`)
    art:<id>         JSON {"change", "entities", "time"}: the change recorded for an article id (idempotency), the
                     entity weights it added to its story, its event time, and "replaced_by": the update that
                     replaced this version of an article in its story

A batch is decided in Python from one snapshot (read in a few pipelined round trips) exactly as if its
articles came one by one, then committed by one Lua script that first checks what the decisions rest on has
not changed: no article already assigned, no story it founds already there, the versions of the stories it
changes and of every index key it files under (which include every key its articles found candidates
through). On a conflict (another replica committed in between) the batch is decided again from a fresh
snapshot: every race has one winner, two first reports of one event cannot found two stories, and no
assignment is overwritten. A candidate story the batch read but did not change is not checked: another
replica may have grown it meanwhile (an article then decided against its older state); checking it too would
make every batch that merely looked at a busy story conflict with every replica that joins it.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import redis
import xxhash

from worker.core import cluster
from worker.core.cluster import ArticleFeatures, ClusterConfig, ClusterInput, StoryChange
from worker.core.embedding import DIM

log = logging.getLogger(__name__)

_DOCS = "#docs"         # the field of a df generation that counts its articles (no term or entity key starts so)
_DF_GENERATION_WINDOWS = 4
_POSTINGS_READ = 50     # most recent stories read per index key: bounds the cost of an article
_POSTINGS_KEPT = 200    # and kept per key, so index memory stays bounded too
_MAX_ATTEMPTS = 50
_CLOSE_CLAIM_S = 60.0   # how long a replica's claim on publishing a story_closed event holds (stats: every 15 s)

_COMMIT = """
local plan = cjson.decode(ARGV[1])
for _, key in ipairs(plan.absent) do
  if redis.call('EXISTS', key) == 1 then return {'conflict', key} end
end
for _, check in ipairs(plan.versions) do
  if tonumber(redis.call('GET', check[1]) or '0') ~= check[2] then return {'conflict', check[1]} end
end
for _, kv in ipairs(plan.set) do redis.call('SET', kv[1], kv[2]) end
for _, k in ipairs(plan.incr) do redis.call('INCR', k) end
for _, h in ipairs(plan.hincr) do redis.call('HINCRBY', h[1], h[2], h[3]) end
for _, z in ipairs(plan.zadd) do redis.call('ZADD', z[1], z[2], z[3]) end
for _, z in ipairs(plan.zrem) do redis.call('ZREM', z[1], z[2]) end
for _, p in ipairs(plan.prune) do
  redis.call('ZREMRANGEBYSCORE', p[1], '-inf', '(' .. p[2])
  redis.call('ZREMRANGEBYRANK', p[1], 0, -(p[3] + 1))
end
local clock = tonumber(redis.call('GET', plan.clock_key) or '-1e18')
if plan.clock > clock then redis.call('SET', plan.clock_key, plan.clock_repr) end
if plan.ttl > 0 then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, plan.ttl) end
  for _, e in ipairs(plan.expire) do redis.call('EXPIRE', e[1], e[2]) end
end
return {'ok', ''}
"""


class UnknownArticle(LookupError):
    """A duplicate or update names an original this store has no record of (never assigned, or expired)."""


class StoreConflict(RuntimeError):
    """Other writers kept changing what a batch read; retriable."""


@dataclass
class _Snapshot:
    """What a batch reads, plus its own effects so far: the state article i sees after articles before it."""
    now: float
    df: dict[int, dict[str, int]]   # generation -> document frequencies read ("#docs": articles)
    postings: dict[str, dict[str, float]]
    key_versions: dict[str, int]
    stories: dict[str, dict] = field(default_factory=dict)
    story_versions_read: dict[str, int] = field(default_factory=dict)
    new_stories: set[str] = field(default_factory=set)
    touched_keys: dict[str, set[str]] = field(default_factory=dict)  # index key -> story ids to file
    df_delta: dict[int, dict[str, int]] = field(default_factory=dict)  # this batch's own, per generation
    changes: dict[str, dict] = field(default_factory=dict)  # article id -> art record
    emb_sums: list[int] = field(default_factory=list)  # integer sums of the embeddings seen ("embsum")
    emb_count: int = 0
    emb_delta: list[int] = field(default_factory=list)
    emb_count_delta: int = 0
    epoch: str = ""                      # of the namespace, in the ids of the stories founded
    ids_taken: set[str] = field(default_factory=set)  # story ids found taken at a commit (another story's)


class StoryStore:
    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: int | None, window_seconds: float,
                 config: ClusterConfig | None = None, embedder=None, embedding_threads: int | None = None,
                 frequencies_ttl_seconds: int | None = None, epoch_ids: bool = True, progress=None):
        """`ttl_seconds`: every key expires this long after its last write (0/None: never); the document
        frequencies, read for up to two generations after a write, by default two generations after theirs
        (`frequencies_ttl_seconds` overrides it: a batch run's namespace holds nothing for longer than a week).

        `epoch_ids`: the ids of the stories founded carry the namespace's epoch, a token created with its first
        story and again once Redis lost its data, so that a story founded again then (its founder redelivered)
        never takes the id, and with it the versions consumers already hold, of the story lost. Off, an id
        depends on its founder's id alone: a batch run (one namespace each) gives the same ids every time.

        `progress`: called for each article weighed and assigned (a liveness heartbeat: long texts take long)."""
        self.redis = client
        self._progress = progress or (lambda: None)
        # Sentence embeddings of the leads (worker.core.embedding): built on first need when the config weighs
        # them and the caller did not attach `ClusterInput.embedding` itself; nothing loads before that.
        self._embedder = embedder
        self._embedding_threads = embedding_threads or None
        self.namespace = namespace
        self.ttl = int(ttl_seconds or 0)
        self.window = float(window_seconds)
        self.epoch_ids = epoch_ids
        self.frequencies_ttl = (int(frequencies_ttl_seconds) if frequencies_ttl_seconds is not None
                                else int(2 * _DF_GENERATION_WINDOWS * self.window) + 86_400)
        self.config = config or ClusterConfig()
        self._prefix = f"sw:{{{namespace}}}:"
        self._commit = client.register_script(_COMMIT)
        self._token = uuid.uuid4().hex  # this process's claims on story_closed events to publish

    # ---- keys -------------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _story_key(self, story_id: str) -> str:
        return self._key("story", story_id)

    def _article_key(self, article_id: str) -> str:
        return self._key("art", article_id)

    def _story_version_key(self, story_id: str) -> str:
        return self._key("sver", story_id)

    def _index_version_key(self, index_key: str) -> str:
        return self._key("iver", index_key)

    # ---- public API ---------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the embedding model now (when the config uses it), so a broken install fails at start."""
        if self.config.embed_weight > 0 and self._embedder is None:
            self._embedder = _load_embedder(self._embedding_threads)

    def embed_probe(self, title: str, text: str) -> None:
        """Embed one lead, no Redis involved (when the config uses embeddings): whether the model still runs."""
        if self.config.embed_weight > 0:
            self.warm_up()
            from worker.core.embedding import lead_of
            self._embedder.embed([lead_of(title, text)])

    @property
    def embedding_threads(self) -> int | None:
        """Threads of the loaded embedding model (None: not loaded, or attached by the caller)."""
        return getattr(self._embedder, "threads", None)

    def assign(self, items: Sequence[ClusterInput], seen_before: Sequence[float] | None = None) -> list[StoryChange]:
        """Each new article, in order, joins the most similar active story or starts one.

        `seen_before[i]`: the largest event time of the input before `items[i]` that is recorded after it (the
        copies of its batch); it counts in that article's "now", as the clock would hold it had they come first."""
        items = self._with_embeddings(items)
        floors = {i.article_id: t for i, t in zip(items, seen_before or ())}
        taken: set[str] = set()  # story ids a commit found held by a story founded before
        for _ in range(_MAX_ATTEMPTS):
            result = self._try_assign(items, floors, taken)
            if result is not None:
                return result
        raise StoreConflict(f"assign: {len(items)} articles kept conflicting after {_MAX_ATTEMPTS} attempts")

    def add_duplicate(self, article_id: str, duplicate_of: str, source: str, event_time: float) -> StoryChange:
        """A duplicate joins its original's story: copies+1, its outlet counted, article_count unchanged."""
        def apply(story: dict, original: dict, _replaced: str) -> tuple[dict, dict]:
            # a copy adds no entity mass to take out later
            return cluster.add_copy(story, source, event_time, self.config), {}
        return self._change_existing(article_id, duplicate_of, event_time, "duplicate_seen", apply)

    def update_article(self, item: ClusterInput, update_of: str) -> StoryChange:
        """Same canonical URL, new content: stays in the earlier article's story, its entities re-counted. An
        older version that arrives after the one the story holds (published before it) changes nothing in the
        story: the newer one stays (as the dedup index keeps the newest version of a URL)."""
        features = self._weighed(item)

        def apply(story: dict, original: dict, replaced: str) -> tuple[dict, dict | None]:
            if item.event_time < original.get("time", -math.inf):
                return dict(story), None
            named = cluster.with_story_names(features, story, self.config)
            was_copy = original["change"]["action"] == "duplicate_seen"
            state = cluster.replace_article(story, original["entities"], item, named, self.config, replaced,
                                            replaced_a_copy=was_copy)
            return state, named.entity_vector
        return self._change_existing(item.article_id, update_of, item.event_time, "article_updated", apply,
                                     replaces=True)

    def close_expired(self) -> list[StoryChange]:
        """`story_closed` for stories whose last event time fell out of the window, and for those closed before
        whose event was never confirmed published (`confirm_closed`): closing queues them in Redis."""
        for _ in range(_MAX_ATTEMPTS):
            if self._close_newly_expired():
                break
        else:
            raise StoreConflict("close_expired kept conflicting")
        queued = [(s.decode(), v) for s, v in self.redis.zrange(self._key("closing"), 0, -1, withscores=True)]
        if not queued:
            return []
        states = [json.loads(raw) if raw else None
                  for raw in self.redis.mget([self._story_key(s) for s, _ in queued])]
        # Nothing to say for a story expired since, nor for one a late copy or update changed since its close:
        # that change's event, of a higher version, says closed (an entry queued by an older replica holds the
        # clock, not the version, and is offered as before).
        said = {s for (s, closed_version), state in zip(queued, states)
                if state is None or closed_version < state["version"]}
        self.confirm_closed(sorted(said))
        offered = [state for state in states if state is not None and state["id"] not in said]
        mine = self._claim([state["id"] for state in offered])
        return [self._change(state, "story_closed", None, None, None, []) for state in offered
                if state["id"] in mine]

    def _claim(self, story_ids: Sequence[str]) -> set[str]:
        """The queued closes this process publishes: those no other replica claimed in the last
        `_CLOSE_CLAIM_S` (each replica reads the queue at its stats interval: unclaimed, every replica reading
        it before the first confirms would publish the event, and count it). A claim outlives a replica that
        stopped before confirming by that long at most; its own failed publish keeps it for the next try."""
        if not story_ids:
            return set()
        keys = [self._key("closeclaim", s) for s in story_ids]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, self._token, nx=True, px=int(_CLOSE_CLAIM_S * 1000))
        for key in keys:
            pipe.get(key)
        holders = pipe.execute()[len(keys):]
        return {s for s, holder in zip(story_ids, holders) if holder == self._token.encode()}

    def confirm_closed(self, story_ids: Sequence[str]) -> None:
        """Their `story_closed` events are acknowledged: off the queue. Their claims stay until they lapse: a
        replica that read the queue before this still finds them taken."""
        if story_ids:
            self.redis.zrem(self._key("closing"), *story_ids)

    def _close_newly_expired(self) -> bool:
        clock = float(self.redis.get(self._key("clock")) or 0.0)
        expired = self.redis.zrangebyscore(self._key("active"), "-inf", f"({clock - self.window}")
        if not expired:
            return True
        ids = [s.decode() for s in expired]
        states = [json.loads(raw) for raw in self.redis.mget([self._story_key(s) for s in ids]) if raw]
        # Checked again on the state itself: a join committed since the range read keeps the story open (one
        # committed after this read fails the version check).
        reopened = {s["id"] for s in states if cluster.latest_report(s) >= clock - self.window}
        states = [s for s in states if s["id"] not in reopened]
        closed = [{**s, "closed": True, "version": s["version"] + 1} for s in states]
        plan = self._plan()
        for before, after in zip(states, closed):
            plan["versions"].append([self._story_version_key(after["id"]), before["version"]])
            self._set_story(plan, after)
            plan["zadd"].append([self._key("closing"), after["version"], after["id"]])
        plan["zrem"] = [[self._key("active"), s] for s in ids if s not in reopened]
        return self._run(plan, [])

    def drop(self) -> None:
        """Delete every key of the namespace (batch mode, tests)."""
        batch = []
        for key in self.redis.scan_iter(match=self._prefix.replace("{", "\\{").replace("}", "\\}") + "*",
                                        count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch = []
        if batch:
            self.redis.delete(*batch)

    def _with_embeddings(self, items: Sequence[ClusterInput]) -> list[ClusterInput]:
        """Items with their lead embeddings, computed only when the config uses them and only for articles
        that have none and no recorded decision yet (a redelivery reuses its record and needs none)."""
        items = list(items)
        if self.config.embed_weight <= 0:
            return items
        missing = [i for i, item in enumerate(items) if item.embedding is None]
        if not missing:
            return items
        records = self.redis.mget([self._article_key(items[i].article_id) for i in missing])
        missing = [i for i, record in zip(missing, records) if record is None]
        if not missing:
            return items
        if self._embedder is None:
            self._embedder = _load_embedder(self._embedding_threads)
        from worker.core.embedding import lead_of
        vectors = self._embedder.embed([lead_of(items[i].title, items[i].text) for i in missing])
        for i, vector in zip(missing, vectors):
            items[i] = replace(items[i], embedding=vector)
        return items

    # ---- assignment ----------------------------------------------------------------------------------------
    def _try_assign(self, items: Sequence[ClusterInput], floors: dict[str, float],
                    taken: set[str]) -> list[StoryChange] | None:
        records = self.redis.mget([self._article_key(i.article_id) for i in items]) if items else []
        done = {i.article_id: json.loads(r) for i, r in zip(items, records) if r}
        fresh = [i for i in items if i.article_id not in done]
        if not fresh:
            return [StoryChange.from_dict(done[i.article_id]["change"]) for i in items]
        features = {}
        for item in fresh:
            features[item.article_id] = cluster.article_features(item, self.config)
            self._progress()
        snapshot = self._read_snapshot(fresh, features, floors)
        snapshot.ids_taken = taken
        for item in fresh:
            self._progress()
            if item.article_id not in snapshot.changes:
                snapshot.now = max(snapshot.now, floors.get(item.article_id, -math.inf))
                snapshot.changes[item.article_id] = self._assign_one(item, features[item.article_id], snapshot)
        conflict = self._run_checked(*self._assign_plan(snapshot))
        if conflict is not None:
            story_key = self._story_key("")
            if conflict.startswith(story_key) and conflict[len(story_key):] in snapshot.new_stories:
                taken.add(conflict[len(story_key):])
            return None
        records = {**done, **snapshot.changes}
        return [StoryChange.from_dict(records[i.article_id]["change"]) for i in items]

    def _read_snapshot(self, fresh: Sequence[ClusterInput], features: dict[str, ArticleFeatures],
                       floors: dict[str, float]) -> _Snapshot:
        """Round trip 1: clock; 2: frequencies of the generations the articles fall in; 3 (atomic): postings
        with their versions."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._key("clock"))
        if self.config.embed_weight > 0:
            pipe.hgetall(self._key("embsum"))
        token = uuid.uuid4().hex if self.epoch_ids else ""
        if token:  # created with the namespace's first story, and again once Redis lost its data
            pipe.set(self._key("epoch"), token, nx=True, get=True, ex=self.ttl or None)
        clock, *rest = pipe.execute()
        emb = rest.pop(0) if self.config.embed_weight > 0 else {}
        epoch = (rest.pop(0) or b"").decode() or token if token else ""  # the one kept, or ours
        now, generations = float(clock) if clock else float("-inf"), set()
        for item in fresh:  # each article reads the generation of its "now" and the one before
            now = max(now, item.event_time, floors.get(item.article_id, -math.inf))
            generations |= {self._generation(now) - 1, self._generation(now)}
        fields = sorted({k for f in features.values() for k in cluster.df_keys(f)}) + [_DOCS]
        snapshot = _Snapshot(now=float(clock) if clock else float("-inf"),
                             df=self._frequencies(sorted(generations), fields), postings={}, key_versions={})
        snapshot.epoch = epoch
        if emb:
            snapshot.emb_count = int(emb.pop(b"n", 0))
            snapshot.emb_sums = [0] * DIM  # a field whose sum is 0 may be absent
            for index, value in emb.items():
                snapshot.emb_sums[int(index)] = int(value)
        lookup = sorted({k for f in features.values() for k in self._possible_index_keys(f)})
        pipe = self.redis.pipeline(transaction=True)
        for key in lookup:
            pipe.zrevrangebyscore(self._key("idx", key), "+inf", "-inf", start=0, num=_POSTINGS_READ,
                                  withscores=True)
        for key in lookup:  # one GET each: a cluster pipeline refuses MGET
            pipe.get(self._index_version_key(key))
        replies = pipe.execute() if lookup else []
        for key, entries in zip(lookup, replies):
            snapshot.postings[key] = {s.decode(): score for s, score in entries}
        snapshot.key_versions = {k: int(v or 0) for k, v in zip(lookup, replies[len(lookup):])}
        return snapshot

    def _possible_index_keys(self, features: ArticleFeatures) -> Iterable[str]:
        """Every key an article might be filed under; which ones it is depends on frequencies seen in order."""
        return list(features.entities) + list(features.title_terms)

    def _assign_one(self, item: ClusterInput, base: ArticleFeatures, snap: _Snapshot) -> dict:
        snap.now = max(snap.now, item.event_time)
        generation = self._generation(snap.now)
        df = _Overlay([part.get(g, {}) for part in (snap.df, snap.df_delta) for g in (generation - 1, generation)])
        features = cluster.weigh(base, df, df.get(_DOCS), self.config, self._embedding_mean(snap))
        postings = {k: _top_postings(snap.postings.get(k, {})) for k in features.index_keys}
        candidates = cluster.rank_candidates(features, postings, snap.now - self.window, self.config)
        self._load_stories(snap, candidates)  # a candidate whose state expired is left out
        decision = cluster.decide(features, [snap.stories[s] for s in candidates if s in snap.stories], self.config)
        if decision.story_id is None:
            story_id = self._unused_story_id(item.article_id, snap)
            state = cluster.new_story(story_id, item, features, self.config)
            snap.new_stories.add(story_id)
            action = "created"
        else:
            story_id = decision.story_id
            features = cluster.with_story_names(features, snap.stories[story_id], self.config)
            state = cluster.merge_article(snap.stories[story_id], item, features, self.config)
            action = "article_added"
        state["version"] += 1
        snap.stories[story_id] = state
        for key in cluster.filing_keys(state, features, self.config):
            snap.postings.setdefault(key, {})[story_id] = cluster.latest_report(state)
            snap.touched_keys.setdefault(key, set()).add(story_id)
        delta = snap.df_delta.setdefault(generation, {})
        for key in cluster.df_keys(features) + [_DOCS]:
            delta[key] = delta.get(key, 0) + 1
        counts = cluster.embedding_counts(features)
        if counts is not None and self.config.embed_weight > 0:
            snap.emb_delta = [a + b for a, b in zip(snap.emb_delta or [0] * len(counts), counts)]
            snap.emb_count_delta += 1
        change = self._change(state, action, item.article_id, decision.score, decision.runner_up,
                              decision.shared_entities)
        return {"change": change.to_dict(), "entities": features.entity_vector, "time": item.event_time}

    @staticmethod
    def _unused_story_id(article_id: str, snap: _Snapshot) -> str:
        """The id of the story an article founds: from the namespace's epoch and the article's id, or, when a
        commit found a story holding that id (the article was sent again after its record expired while joins
        kept its first story alive), the next of a sequence derived from them."""
        story_id = _story_id(snap.epoch + article_id)
        attempt = 0
        while story_id in snap.ids_taken or story_id in snap.stories:
            attempt += 1
            story_id = _story_id(f"{snap.epoch}{article_id}#{attempt}")
        return story_id

    @staticmethod
    def _embedding_mean(snap: _Snapshot) -> list[float] | None:
        """Mean embedding of every article before this one: stored integer sums plus this batch's own."""
        count = snap.emb_count + snap.emb_count_delta
        if not count:
            return None
        sums = snap.emb_sums or [0] * len(snap.emb_delta)
        delta = snap.emb_delta or [0] * len(sums)
        return cluster.embedding_mean([a + b for a, b in zip(sums, delta)], count)

    def _load_stories(self, snap: _Snapshot, story_ids: Sequence[str]) -> None:
        missing = [s for s in story_ids if s not in snap.stories]
        if not missing:
            return
        for story_id, raw in zip(missing, self.redis.mget([self._story_key(s) for s in missing])):
            state = json.loads(raw) if raw is not None else None
            # expired by TTL while still indexed, or closed by another replica whose clock was ahead: forget it
            if state is None or state.get("closed"):
                for posting in snap.postings.values():
                    posting.pop(story_id, None)
                continue
            snap.stories[story_id] = state
            snap.story_versions_read[story_id] = state["version"]

    def _assign_plan(self, snap: _Snapshot) -> tuple[dict, list[str]]:
        plan = self._plan()
        plan["absent"] = [self._article_key(a) for a in snap.changes]
        plan["absent"] += [self._story_key(s) for s in snap.new_stories]
        plan["versions"] += [[self._story_version_key(s), v] for s, v in snap.story_versions_read.items()
                             if snap.stories[s]["version"] != v]
        plan["versions"] += [[self._index_version_key(k), snap.key_versions[k]] for k in snap.touched_keys
                             if k in snap.key_versions]
        for story_id, state in snap.stories.items():
            if story_id in snap.new_stories or state["version"] != snap.story_versions_read.get(story_id):
                self._set_story(plan, state)
                plan["zadd"].append([self._key("active"), repr(cluster.latest_report(state)), story_id])
        for key, story_ids in snap.touched_keys.items():
            index_key = self._key("idx", key)
            plan["zadd"] += [[index_key, repr(snap.postings[key][s]), s] for s in sorted(story_ids)]
            plan["incr"].append(self._index_version_key(key))
            plan["prune"].append([index_key, repr(snap.now - self.window), _POSTINGS_KEPT])
        plan["set"] += [[self._article_key(a), json.dumps(record)] for a, record in snap.changes.items()]
        plan["hincr"] += [[self._df_key(g), k, n] for g, delta in snap.df_delta.items() for k, n in delta.items()]
        plan["expire"] = [[self._df_key(g), self.frequencies_ttl] for g in snap.df_delta]
        if snap.emb_count_delta:
            embsum = self._key("embsum")
            plan["hincr"] += [[embsum, str(i), d] for i, d in enumerate(snap.emb_delta) if d]
            plan["hincr"].append([embsum, "n", snap.emb_count_delta])
        plan["clock"] = snap.now
        plan["clock_repr"] = repr(snap.now)
        return plan, [k for key in snap.touched_keys for k in (self._key("idx", key), self._index_version_key(key))]

    # ---- duplicates and updates -----------------------------------------------------------------------------
    def _change_existing(self, article_id: str, original_id: str, event_time: float, action: str,
                         apply, replaces: bool = False) -> StoryChange:
        """Apply `apply(story, original record, its id)` to the story of `original_id`, once per `article_id`.

        An update (`replaces`) marks the version it replaced; a later update naming that version (dedup finds
        an article by URL newest generation first, so two updates can name the same one) replaces the version
        the story holds now instead, whose entities are the ones to take out."""
        for _ in range(_MAX_ATTEMPTS):
            mine, original = self.redis.mget([self._article_key(article_id), self._article_key(original_id)])
            if mine:
                return StoryChange.from_dict(json.loads(mine)["change"])
            if not original:
                raise UnknownArticle(f"{original_id!r} has no story in namespace {self.namespace!r}")
            record = json.loads(original)
            held = original_id
            for _ in range(_MAX_ATTEMPTS):
                newer = record.get("replaced_by")
                raw = self.redis.get(self._article_key(newer)) if newer else None
                if raw is None:
                    break
                held, record = newer, json.loads(raw)
            story_id = record["change"]["story_id"]
            raw = self.redis.get(self._story_key(story_id))
            if raw is None:
                raise UnknownArticle(f"story {story_id!r} of {original_id!r} has expired")
            story = json.loads(raw)
            state, entities = apply(story, record, held)  # entities None: replaces nothing (an older version)
            state["version"] = story["version"] + 1
            change = self._change(state, action, article_id, None, None, [])
            plan = self._plan()
            plan["absent"] = [self._article_key(article_id)]
            plan["versions"] = [[self._story_version_key(story_id), story["version"]]]
            self._set_story(plan, state)
            plan["set"].append([self._article_key(article_id), json.dumps(
                {"change": change.to_dict(), "entities": entities or {}, "time": event_time})])
            if replaces and entities is not None:  # checked by the story's version: a concurrent update reads again
                plan["set"].append([self._article_key(held), json.dumps({**record, "replaced_by": article_id})])
            if not state.get("closed"):
                plan["zadd"] = [[self._key("active"), repr(cluster.latest_report(state)), story_id]]
            plan["clock"], plan["clock_repr"] = event_time, repr(event_time)
            if self._run(plan, []):
                return change
        raise StoreConflict(f"{article_id!r} kept conflicting")

    def _weighed(self, item: ClusterInput) -> ArticleFeatures:
        base = cluster.article_features(item, self.config)
        clock = self.redis.get(self._key("clock"))
        generation = self._generation(max(float(clock) if clock else float("-inf"), item.event_time))
        read = self._frequencies([generation - 1, generation], cluster.df_keys(base) + [_DOCS])
        df = _Overlay(list(read.values()))
        return cluster.weigh(base, df, df.get(_DOCS), self.config)

    def _frequencies(self, generations: Sequence[int], fields: list[str]) -> dict[int, dict[str, int]]:
        """Document frequencies of `fields` in each generation (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for g in generations:
            pipe.hmget(self._df_key(g), fields)
        return {g: {k: int(v) for k, v in zip(fields, values) if v is not None}
                for g, values in zip(generations, pipe.execute())}

    def _generation(self, event_time: float) -> int:
        return math.floor(event_time / (_DF_GENERATION_WINDOWS * self.window))

    def _df_key(self, generation: int) -> str:
        return self._key("df", str(generation))

    # ---- helpers ------------------------------------------------------------------------------------------
    def _change(self, state: dict, action: str, article_id: str | None, score: float | None,
                runner_up: dict | None, shared: list[str]) -> StoryChange:
        return StoryChange(story_id=state["id"], version=state["version"], action=action, article_id=article_id,
                           score=score, runner_up=runner_up, shared_entities=shared,
                           story=cluster.public_view(state))

    def _set_story(self, plan: dict, state: dict) -> None:
        """The story state and its version key, written together (a story founded again after both expired
        starts from its own version)."""
        plan["set"] += [[self._story_key(state["id"]), json.dumps(state)],
                        [self._story_version_key(state["id"]), str(state["version"])]]

    def _plan(self) -> dict:
        return {"absent": [], "versions": [], "set": [], "incr": [], "hincr": [], "zadd": [], "zrem": [], "prune": [],
                "expire": [], "clock": float("-inf"), "clock_repr": "",
                "clock_key": self._key("clock"), "ttl": self.ttl}

    def _run(self, plan: dict, index_keys: list[str]) -> bool:
        """Run the commit script; False when a check failed (someone else committed first)."""
        return self._run_checked(plan, index_keys) is None

    def _run_checked(self, plan: dict, index_keys: list[str]) -> str | None:
        """Run the commit script; the key whose check failed, or None when it committed."""
        if plan["clock"] == float("-inf"):
            plan["clock"], plan["clock_repr"] = -1e18, "-1e18"
        shared = [self._key(k) for k in ("clock", "active", "closing", "embsum")]
        shared += [self._key("epoch")] if self.epoch_ids else []  # it lives as long as the stories
        written = [kv[0] for kv in plan["set"]] + [h[0] for h in plan["hincr"]]
        keys = sorted(set(shared + index_keys + written + plan["absent"]))
        status, key = self._commit(keys=keys, args=[json.dumps(plan)])
        return None if status == b"ok" else key.decode()


@functools.lru_cache(maxsize=1)
def _load_embedder(threads: int | None):
    """The lead embedder (onnxruntime and the model, heavy: on first need), one per process.

    A configuration that weighs embeddings but cannot load them fails loudly: replicas deciding with and
    without a signal would cluster inconsistently."""
    try:
        from worker.core.embedding import Embedder
        return Embedder(threads=threads)
    except ImportError as exc:
        raise RuntimeError(f"story embeddings are on but cannot load: {exc}. Reinstall story-worker with its "
                           "dependencies, or set SW_STORY_EMBEDDINGS=false") from exc


class _Overlay(dict):
    """Read-only view of document frequencies: the sum of the parts (generations read, this batch's own)."""

    def __init__(self, parts: list[dict[str, int]]):
        super().__init__()
        self._parts = parts

    def get(self, key, default=0):
        return sum(part.get(key, 0) for part in self._parts) or default


def _story_id(seed: str) -> str:
    return "st-" + xxhash.xxh3_64_hexdigest(seed.encode())


def _top_postings(entries: dict[str, float]) -> dict[str, float]:
    """The most recent stories of one index key, in the order Redis would return them (ties: id descending)."""
    ranked = sorted(entries.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return dict(ranked[:_POSTINGS_READ])

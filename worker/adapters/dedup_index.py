"""Redis-backed duplicate index: atomic check-and-insert of a batch of articles.

Key layout (every key carries the hash tag `{<namespace>}`, so all of a namespace sits in one Redis Cluster
slot and the two scripts may touch several keys). Entries live in event-time generations of half a window, so
old ones leave by key expiry (live mode, `ttl_seconds`) or simply stop being read (batch mode). An item reads
the three generations its window overlaps (a finer cut would bound memory more tightly but cost a lookup per
sample and generation more: each lookup in a large hash is a few cache misses):

    sw:{ns}:meta      HASH  ver (bumped by every commit), tmax (largest event time seen)
    sw:{ns}:log       LIST  per commit (the last LOG_LENGTH), the fields it wrote: what a concurrent batch
                            compares with the fields it read
    sw:{ns}:<g>:a     HASH  ref -> record: the stored decision, plus the sketch for originals
    sw:{ns}:<g>:u     HASH  url key -> ref of the latest article (by event time) seen at that canonical URL
    sw:{ns}:<g>:c     HASH  content key -> ref of the first original (or rewrite) with that content
    sw:{ns}:<g>:x     HASH  anchor sample -> refs of originals indexed under it (at most DF_CAP; a full
                            posting marks a sample shared by many unrelated originals: boilerplate)

`ref` is an 8-byte hash of the article id; `<g>` is floor(event_time / generation seconds).

One batch is two round trips: GATHER (a read-only script returning, per item, its stored decision and the
records it may match) and COMMIT (a script that applies the writes only if `ver` is unchanged). The decisions
are made in between by the pure core, item by item, each seeing the earlier items of the batch. When a
concurrent writer bumped `ver`, COMMIT answers with the fields written since: if none of them is a field this
batch read (own refs, URL and content keys, sketch samples) and the new `tmax` changes no liveness the
decisions used, the decisions stand as if made after that writer and the commit is simply retried at the new
version; otherwise the batch is gathered and decided again. So every race has one winner and a batch decides
exactly as the same items one at a time would. Each item counts boilerplate and looks for matches only in
the generations that can be live for it, so the decisions do not depend on how a stream is cut into batches.

Wire format: the items of a batch (with their sketch samples) travel as one packed binary argument and the
writes as another; each item's exact-match evidence comes back as one packed binary string, and the postings
of the batch's samples (with the records they point to) as two more (see `_GATHER`), which keeps redis-py's
per-argument encoding and reply parsing out of the hot path. Samples are looked up once per batch and
generation (generations without postings are skipped); the client then matches each item against the postings
of its own samples in the generations live for it.

The cost per article must not grow with the index, while each lookup in a larger hash costs more cache misses
and common phrases fill more postings. So the lookups are as few as the decisions allow:
- an item finds candidates through its probe samples only (`Fingerprint.probes`, about half its sketch:
  the only ones that can be anchors of an article it copies); the rest of its sketch matters only for its
  boilerplate when there is a candidate to compare with, so it is read only for items that may have one;
- samples the client has already seen full (boilerplate: a posting only grows) in a generation live for the
  whole batch are not asked for again (`_known_boilerplate`);
- GATHER sends back only the postings that can change a decision: full ones (counted over the generations),
  those pointing at a possible candidate, and those the batch's own writes may fill.
"""
from __future__ import annotations

import json
import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import xxhash

from worker.core.dedup import DedupInput, DedupOutcome, Evidence, IndexedArticle, decide
from worker.core.fingerprint import Fingerprint, fingerprints

DF_CAP = 4
# An original is a candidate of an article only when this many of the article's (non-boilerplate) samples are
# anchors of it. A copy keeps most anchors (every copy in the labelled data keeps at least 3 of 8); a lone
# shared anchor is a chance collision of a common phrase, whose number grows with the index: fetching those
# records would make the cost per article grow with the number of articles indexed.
MIN_ANCHOR_HITS = 2
LOG_LENGTH = 16
_REF = 8
_GENERATIONS_PER_WINDOW = 2
# Records decoded, by their bytes: a decode takes ~5 us, an entry ~3 KB (its sketch as Python ints), so 10,000 of
# them hold ~30 MB (100,000 held ~300 MB beside the ~1 GB of the models, for as little time saved).
_DECODED_CACHE = 10_000
_KNOWN_FULL_CAP = 1_000_000  # samples remembered as boilerplate (~100 MB); beyond it, old generations go

# ARGV[1] = number of generations, ARGV[2] = items, each: own slot (2 bytes), lowest slot to read (2), ref (8),
# url key (8), content key (8), then whether an earlier item of the batch may be a candidate (1), the number of
# probe samples (1) and of other samples (1), and those samples (4 bytes each; samples known to be boilerplate
# left out); ARGV[3] = length of a full posting (DF_CAP refs); ARGV[4] = MIN_ANCHOR_HITS; ARGV[5] = the anchors
# of the batch's items (the samples its writes may add to; 4 bytes each). Reply: ver, tmax, then per item one
# string:
#   stored record, URL record (newest generation first)   each: length (4 bytes, 0 = none) + bytes
#   content hits: count (1) + per hit: slot (2), length (4), record
# then, for the whole batch (from the lowest slot any item reads; generations without postings are skipped):
#   postings: count (4) + per posting: slot (2), sample (4), ref count (1), kept count (1), kept refs (8 each):
#             the refs kept are those of the records below (a full posting keeps none)
#   records:  count (4) + per record: slot (2), ref (8), length (4), record   (each record once, only for
#             refs that at least MIN_ANCHOR_HITS probe samples' postings that are not full point at)
# Probe samples are looked up for every item; the other samples only for the items that may have a candidate
# (their boilerplate then counts in the comparison). Each distinct sample is looked up once per batch and
# generation (one HMGET per chunk), and each item is matched against the postings of its samples by the client.
_GATHER = """
local n_gen = tonumber(ARGV[1])
local blob = ARGV[2]
local full = tonumber(ARGV[3])
local min_hits = tonumber(ARGV[4])
local ablob = ARGV[5]
local A, U, C, X = {}, {}, {}, {}
for s = 0, n_gen - 1 do
  A[s] = KEYS[3 + s * 4]; U[s] = KEYS[4 + s * 4]; C[s] = KEYS[5 + s * 4]; X[s] = KEYS[6 + s * 4]
end
local has_u, has_c = {}, {}
for s = 0, n_gen - 1 do
  has_u[s] = redis.call('EXISTS', U[s]) == 1
  has_c[s] = redis.call('EXISTS', C[s]) == 1
end
local function lp(v)
  if v then return struct.pack('>I4', #v) .. v end
  return '\0\0\0\0'
end
local out = {redis.call('HGET', KEYS[1], 'ver') or '0', redis.call('HGET', KEYS[1], 'tmax') or ''}
local p = 1
local len = #blob
local lowest = n_gen
local items = {}
while p <= len do
  local own, low = struct.unpack('>I2I2', blob, p)
  local ref = string.sub(blob, p + 4, p + 11)
  local url = string.sub(blob, p + 12, p + 19)
  local content = string.sub(blob, p + 20, p + 27)
  local in_batch, n_probe, n_rest = string.byte(blob, p + 28, p + 30)
  p = p + 31
  local probe = {}
  for i = 1, n_probe do probe[i] = string.sub(blob, p, p + 3); p = p + 4 end
  items[#items + 1] = {in_batch == 1, probe, p, n_rest}     -- the other samples are split only when needed
  p = p + 4 * n_rest
  if low < lowest then lowest = low end
  local parts = {lp(redis.call('HGET', A[own], ref))}
  local by_url = false
  for slot = n_gen - 1, low, -1 do
    if has_u[slot] then
      local hit = redis.call('HGET', U[slot], url)
      if hit then by_url = redis.call('HGET', A[slot], hit) or false; break end
    end
  end
  parts[2] = lp(by_url)
  local hits = {}
  for slot = low, n_gen - 1 do
    if has_c[slot] then
      local hit = redis.call('HGET', C[slot], content)
      if hit then
        local rec = redis.call('HGET', A[slot], hit)
        if rec then hits[#hits + 1] = struct.pack('>I2', slot) .. lp(rec) end
      end
    end
  end
  parts[3] = string.char(#hits) .. table.concat(hits)
  out[#out + 1] = table.concat(parts)
end
local has_x = {}
for slot = lowest, n_gen - 1 do has_x[slot] = redis.call('EXISTS', X[slot]) == 1 end
local seen, total = {}, {}
-- the postings of the samples in `list` not looked up yet, in every generation read: {slot tag, sample, refs}
local function lookup(list)
  local todo, found = {}, {}
  for _, sample in ipairs(list) do
    if not seen[sample] then seen[sample] = true; todo[#todo + 1] = sample end
  end
  for slot = lowest, n_gen - 1 do
    if #todo > 0 and has_x[slot] then
      local tag = struct.pack('>I2', slot)
      for c = 1, #todo, 1000 do
        local last = math.min(c + 999, #todo)
        local values = redis.call('HMGET', X[slot], unpack(todo, c, last))
        for i = 1, last - c + 1 do
          local refs = values[i]
          if refs then
            local sample = todo[c + i - 1]
            found[#found + 1] = {tag, sample, refs}
            total[sample] = (total[sample] or 0) + #refs
          end
        end
      end
    end
  end
  return found
end
-- 1. every item's probe samples; a full posting is boilerplate on its own: its originals are never candidates
local wanted = {}
for _, item in ipairs(items) do
  for _, sample in ipairs(item[2]) do wanted[#wanted + 1] = sample end
end
local probed = lookup(wanted)
local keys_of, hits, order = {}, {}, {}
for _, f in ipairs(probed) do
  local tag, refs = f[1], f[3]
  if #refs < full then
    local keys, own = keys_of[f[2]] or {}, {}
    for j = 1, #refs, 8 do
      local k = tag .. string.sub(refs, j, j + 7)
      keys[#keys + 1] = k
      own[#own + 1] = k
      local n = hits[k]
      if not n then order[#order + 1] = k end
      hits[k] = (n or 0) + 1
    end
    keys_of[f[2]] = keys
    f[4] = own                                       -- this posting's (slot tag .. ref) keys
  end
end
-- 2. the other samples of the items that may have a candidate: MIN_HITS of their probe samples point at one
wanted = {}
for _, item in ipairs(items) do
  local maybe = item[1]
  local mine = {}
  for _, sample in ipairs(item[2]) do
    if maybe then break end
    for _, k in ipairs(keys_of[sample] or {}) do
      mine[k] = (mine[k] or 0) + 1
      if mine[k] >= min_hits then maybe = true; break end
    end
  end
  if maybe then
    for q = item[3], item[3] + 4 * item[4] - 4, 4 do wanted[#wanted + 1] = string.sub(blob, q, q + 3) end
  end
end
local others = lookup(wanted)
-- Only originals that MIN_HITS probe samples of the batch point at can be a candidate of one of its items: a
-- posting carries its length and only those refs. A posting that holds no such ref changes no decision unless
-- its sample may be boilerplate: full with the postings of the other generations, or with what the batch may
-- add to it. The chance hits of common phrases, whose number grows with the index, are left out.
local anchors = {}
for i = 1, #ablob, 4 do anchors[string.sub(ablob, i, i + 3)] = true end
local postings, records = {}, {}
for _, found in ipairs({probed, others}) do
  for _, f in ipairs(found) do
    local kept = {}
    for _, k in ipairs(f[4] or {}) do
      if hits[k] >= min_hits then kept[#kept + 1] = string.sub(k, 3, 10) end
    end
    if #kept > 0 or total[f[2]] >= full or anchors[f[2]] then
      postings[#postings + 1] = f[1] .. f[2] .. string.char(#f[3] / 8, #kept) .. table.concat(kept)
    end
  end
end
for _, k in ipairs(order) do
  if hits[k] >= min_hits then
    local rec = redis.call('HGET', A[struct.unpack('>I2', k)], string.sub(k, 3, 10))
    if rec then records[#records + 1] = k .. lp(rec) end
  end
end
out[#out + 1] = struct.pack('>I4', #postings) .. table.concat(postings)
out[#out + 1] = struct.pack('>I4', #records) .. table.concat(records)
return out
"""

# ARGV: expected ver, now, ttl ('' for none), posting cap (bytes), log entry, writes. Writes, each: op
# (a, u, c or x), slot (2 bytes), field length (1), field, value length (4), value.
# Reply: {1} when applied; {0, ver, tmax, log entries written after the expected ver} otherwise (no entries
# when the log no longer reaches back that far).
_COMMIT = """
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local expected = tonumber(ARGV[1])
if ver ~= expected then
  local behind = ver - expected
  local entries = {}
  if behind > 0 and behind <= redis.call('LLEN', KEYS[2]) then entries = redis.call('LRANGE', KEYS[2], -behind, -1) end
  return {0, tostring(ver), redis.call('HGET', KEYS[1], 'tmax') or '', entries}
end
local cap, ttl = tonumber(ARGV[4]), tonumber(ARGV[3])
local parts = {a = 0, u = 1, c = 2, x = 3}
local touched = {}
local blob = ARGV[6]
local p, len = 1, #blob
while p <= len do
  local op = string.sub(blob, p, p)
  local slot = struct.unpack('>I2', blob, p + 1)
  local flen = string.byte(blob, p + 3)
  local f = string.sub(blob, p + 4, p + 3 + flen)
  local vlen = struct.unpack('>I4', blob, p + 4 + flen)
  local v = string.sub(blob, p + 8 + flen, p + 7 + flen + vlen)
  p = p + 8 + flen + vlen
  local k = KEYS[3 + slot * 4 + parts[op]]
  if op == 'c' then redis.call('HSETNX', k, f, v)
  elseif op == 'x' then
    if redis.call('HSETNX', k, f, v) == 0 then
      local cur = redis.call('HGET', k, f)
      if #cur < cap then redis.call('HSET', k, f, cur .. v) end
    end
  else redis.call('HSET', k, f, v) end
  touched[k] = true
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
local tmax = tonumber(redis.call('HGET', KEYS[1], 'tmax') or '-1e308')
if tonumber(ARGV[2]) > tmax then redis.call('HSET', KEYS[1], 'tmax', ARGV[2]) end
if ttl then
  for k in pairs(touched) do redis.call('EXPIRE', k, ttl) end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {1}
"""

class DedupIndex:
    """Decides duplicates for batches of articles against a Redis index shared by all worker replicas."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: int | None, window_seconds: float):
        self._redis = client
        self._prefix = f"sw:{{{namespace}}}:"
        self._ttl = ttl_seconds
        self._window = window_seconds
        self._generation = window_seconds / _GENERATIONS_PER_WINDOW if math.isfinite(window_seconds) else math.inf
        self._gather = client.register_script(_GATHER)
        self._commit = client.register_script(_COMMIT)
        self._tmax = -math.inf
        self._decoded: dict[bytes, IndexedArticle] = {}
        self._full: dict[int, int] = {}  # sample -> newest generation in which its posting is known full
        self.stats = {"batches": 0, "regathers": 0, "commit_retries": 0, "samples_asked": 0}

    def check_and_insert(self, items: Sequence[DedupInput]) -> list[DedupOutcome]:
        """Decide each item in order (later items see earlier ones of the same batch) and index the originals, atomically."""
        if not items:
            return []
        prints = fingerprints([(i.canonical_url, i.title, i.text) for i in items])
        self.stats["batches"] += 1
        while True:
            read_set = None
            gens = self._generations(items)
            keys = [self._prefix + "meta", self._prefix + "log"] + [
                self._prefix + f"{g}:{p}" for g in gens for p in "aucx"]
            known = self._known_boilerplate({s for fp in prints for s in fp.sketch}, gens)
            reply = self._gather(keys=keys, args=[len(gens), self._gather_blob(items, prints, gens, known),
                                                  DF_CAP * _REF, MIN_ANCHOR_HITS,
                                                  _packed([*{a for fp in prints for a in fp.anchors}])])
            version, tmax = int(reply[0]), float(reply[1]) if reply[1] else -math.inf
            if self._gen(tmax) > gens[-1]:
                self._tmax = tmax
                continue
            batch = _Batch(gens, self._gen, tmax, self._window, self._decoded, known_full=known)
            batch.load(reply[-2], reply[-1])
            self._learn_boilerplate(batch, gens)
            outcomes = [batch.decide(item, fp, raw, self._gen(item.event_time))
                        for item, fp, raw in zip(items, prints, reply[2:-2])]
            if len(self._decoded) > _DECODED_CACHE:
                self._decoded.clear()
            if not batch.writes:
                return outcomes
            writes = b"".join(batch.writes)
            log_entry = b"".join(batch.written)
            while True:
                result = self._commit(keys=keys, args=[version, repr(batch.now), self._ttl or "", DF_CAP * _REF,
                                                       log_entry, writes, LOG_LENGTH])
                if result[0] == 1:
                    self._tmax = max(self._tmax, batch.now)
                    return outcomes
                new_version, new_tmax, entries = int(result[1]), float(result[2]) if result[2] else -math.inf, result[3]
                if read_set is None:
                    read_set = _read_set(items, prints, batch.sensitive)
                if (len(entries) == new_version - version and new_tmax <= batch.safe_tmax
                        and self._gen(new_tmax) <= gens[-1] and all(_disjoint(e, read_set) for e in entries)):
                    version = new_version          # nothing this batch read has changed: same decisions
                    self.stats["commit_retries"] += 1
                    continue
                self._tmax = max(self._tmax, new_tmax)
                self.stats["regathers"] += 1
                break

    def stored_outcome(self, article_id: str, event_time: float) -> DedupOutcome | None:
        """The outcome stored for an article decided at `event_time` (None when it was not)."""
        raw = self._redis.hget(self._prefix + f"{self._gen(event_time)}:a", _ref(article_id))
        return _decode_outcome(raw) if raw else None

    def drop(self) -> None:
        """Delete every key of the namespace (batch mode cleanup)."""
        for chunk in _chunks(self._redis.scan_iter(match=_glob_escape(self._prefix) + "*", count=1000), 500):
            self._redis.unlink(*chunk)

    def _gen(self, event_time: float) -> int:
        if not math.isfinite(self._generation) or not math.isfinite(event_time):
            return 0
        return math.floor(event_time / self._generation)

    def _live_generations(self, items: Sequence[DedupInput]) -> list[int]:
        """Per item, the oldest generation that may hold a live match for it (at the `now` known here)."""
        lows = []
        now = self._tmax
        for item in items:
            now = max(now, item.event_time)
            lows.append(self._gen(now - self._window) if math.isfinite(self._window) else self._gen(now))
        return lows

    def _generations(self, items: Sequence[DedupInput]) -> list[int]:
        """Generations that may hold a live match for some item, plus each item's own (for its stored decision)."""
        gens = {self._gen(i.event_time) for i in items}
        now = self._tmax
        for item, low in zip(items, self._live_generations(items)):
            now = max(now, item.event_time)
            gens.update(range(low, self._gen(now) + 1))
        return sorted(gens)

    def _known_boilerplate(self, samples: set[int], gens: list[int]) -> frozenset[int]:
        """Samples of the batch already known to be boilerplate for every item of it: left out of GATHER.

        A posting that is full stays full for the life of its generation (postings only grow), and a sample
        full in any generation live for an item is boilerplate for that item. Every generation from
        `_GENERATIONS_PER_WINDOW` before the newest one the batch reads is live for all its items (GATHER is
        repeated when Redis knows a later event time), so those generations' full postings need not be read
        again. Common phrases fill more postings as the index grows: this keeps their cost out of the
        per-article cost.
        """
        oldest = gens[-1] - _GENERATIONS_PER_WINDOW
        full = self._full
        return frozenset(s for s in samples if full.get(s, oldest - 1) >= oldest)

    def _learn_boilerplate(self, batch: "_Batch", gens: list[int]) -> None:
        """Remember the newest generation in which GATHER found a sample's posting full."""
        full = self._full
        for sample, entries in batch.gathered.items():
            for slot, _, count, _ in entries:
                if count >= DF_CAP and full.get(sample, -math.inf) < gens[slot]:
                    full[sample] = gens[slot]
        if len(full) > _KNOWN_FULL_CAP:
            oldest = gens[-1] - _GENERATIONS_PER_WINDOW
            kept = {s: g for s, g in full.items() if g >= oldest}
            self._full = kept if len(kept) < _KNOWN_FULL_CAP // 2 else {}

    def _gather_blob(self, items, prints, gens, known) -> bytes:
        slot = {g: s for s, g in enumerate(gens)}
        parts = []
        lows, in_batch = self._live_generations(items), _may_match_in_batch(prints)
        for item, fp, low, may in zip(items, prints, lows, in_batch):
            asked, rest = fp.probes, fp.others
            if known:
                asked, rest = asked - known, [s for s in rest if s not in known]
            parts.append(_SLOTS.pack(slot[self._gen(item.event_time)], slot[low]) + _ref(item.article_id)
                         + fp.url_key + fp.content_key + bytes((may, len(asked), len(rest)))
                         + _packed([*asked, *rest]))
            self.stats["samples_asked"] += len(asked) + len(rest)
        return b"".join(parts)


@dataclass
class _Batch:
    """Decides the items of one batch in order over the gathered evidence plus the batch's own writes."""
    gens: list[int]
    gen_of: object
    now: float
    window: float
    decoded: dict
    writes: list = field(default_factory=list)
    written: list = field(default_factory=list)         # tagged fields written, for concurrent batches
    records: dict = field(default_factory=dict)         # ref -> IndexedArticle written by this batch
    urls: dict = field(default_factory=dict)            # url key -> {slot: ref} (the last written per slot)
    contents: dict = field(default_factory=dict)        # content key -> {slot: ref}
    postings: dict = field(default_factory=dict)        # sample -> [(slot, ref)] appended by this batch
    stored: dict = field(default_factory=dict)          # ref -> outcome decided in this batch
    gathered: dict = field(default_factory=dict)        # sample -> [(slot, slot bytes, ref count, candidate refs)]
    fetched: dict = field(default_factory=dict)         # (slot bytes + ref) -> raw record gathered
    safe_tmax: float = math.inf                          # a larger tmax could change a liveness used
    reads: list = field(default_factory=list)           # (sketch, boilerplate) of each item decided
    live: tuple = (math.nan, 0, math.inf)               # (now, first live slot, bound) last computed
    known_full: frozenset = frozenset()                  # samples full in a generation live for all (not gathered)

    def load(self, postings: bytes, records: bytes) -> None:
        """The postings of the batch's samples and the records they point to, as gathered."""
        gathered = self.gathered
        (n,) = _U32.unpack_from(postings, 0)
        p = 4
        for _ in range(n):
            slot, sample, count, kept = _POSTING.unpack_from(postings, p)
            end = p + 8 + kept * _REF
            gathered.setdefault(sample, []).append((slot, postings[p:p + 2], count, postings[p + 8:end]))
            p = end
        fetched = self.fetched
        (n,) = _U32.unpack_from(records, 0)
        p = 4
        for _ in range(n):
            key = records[p:p + 10]
            rec, p = _take(records, p + 10)
            fetched[key] = rec

    @property
    def sensitive(self) -> set:
        """Samples read that were not (yet) boilerplate."""
        out = set()
        for sketch, boilerplate in self.reads:
            out.update(s for s in sketch if s not in boilerplate) if boilerplate else out.update(sketch)
        return out

    def decide(self, item: DedupInput, fp: Fingerprint, raw: bytes, gen: int) -> DedupOutcome:
        self.now = max(self.now, item.event_time)
        ref = _ref(item.article_id)
        evidence = self._evidence(ref, fp, raw)
        outcome = decide(item, fp, evidence, self.now, self.window)
        if evidence.stored is None:
            # The URL keeps its latest article by event time: an older version that arrives late (an update
            # published before the version seen) does not displace it, or it would leave the window first.
            latest_at_url = evidence.same_url is None or evidence.same_url.event_time <= item.event_time
            # An exact_url copy stands for the version it copies at the URL: its id, and whether it has a body.
            held = evidence.same_url if outcome.kind == "exact_url" else None
            self._write(ref, item, fp, outcome, self.gens.index(gen), url=latest_at_url,
                        url_version=held.version_at_url if held else None,
                        headline_only=held.headline_only if held and held.headline_only is not None else None)
        return outcome

    def _live_from(self) -> tuple[int, float]:
        """First slot that can hold live entries at `now`, and the tmax beyond which that slot would change."""
        if self.live[0] == self.now:
            return self.live[1], self.live[2]
        if not math.isfinite(self.window):
            first, bound = 0, math.inf
        else:
            low = self.gen_of(self.now - self.window)
            first = next((s for s, g in enumerate(self.gens) if g >= low), len(self.gens))
            generation = self.window / _GENERATIONS_PER_WINDOW
            bound = (low + 1) * generation + self.window
        self.live = (self.now, first, bound)
        return first, bound

    def _record(self, raw: bytes) -> IndexedArticle:
        rec = self.decoded.get(raw)
        if rec is None:
            rec = self.decoded[raw] = _decode_record(raw)
        return rec

    def _evidence(self, ref: bytes, fp: Fingerprint, raw: bytes) -> Evidence:
        live_from, gen_bound = self._live_from()
        if self.now < gen_bound:
            self.safe_tmax = min(self.safe_tmax, math.nextafter(gen_bound, -math.inf))
        stored_raw, p = _take(raw, 0)
        by_url, p = _take(raw, p)
        oldest = self.now - self.window
        by_content = None
        q = p + 1
        for _ in range(raw[p]):
            (slot,) = _U16.unpack_from(raw, q)
            rec, q = _take(raw, q + 2)
            if by_content is None and slot >= live_from and self._record(rec).event_time >= oldest:
                by_content = rec  # an older generation's entry out of the window (once out, always out) hides none

        stored = self.stored.get(ref) or (_decode_outcome(stored_raw) if stored_raw else None)
        # As Redis answers when the articles come one by one: by URL the newest generation, and in it the last
        # written; by content the oldest generation whose entry is live, and in it the first written. This
        # batch's writes come after what Redis held, so they win a tie by URL and lose one by content.
        same_url = self._record(by_url) if by_url else None
        url_gen = self.gen_of(same_url.event_time) if same_url else -math.inf
        for slot, other in self.urls.get(fp.url_key, {}).items():
            if slot >= live_from and self.gens[slot] >= url_gen:
                same_url, url_gen = self.records[other], self.gens[slot]
        same_content = self._record(by_content) if by_content else None
        content_gen = self.gen_of(same_content.event_time) if same_content else math.inf
        for slot, other in self.contents.get(fp.content_key, {}).items():
            if slot >= live_from and self.gens[slot] < content_gen and self.records[other].event_time >= oldest:
                same_content, content_gen = self.records[other], self.gens[slot]
        counts: dict[int, int] = {}
        found: dict[int, list[bytes]] = {}               # sample -> keys of the originals it indexes
        sketch, probe = fp.sketch, fp.probes
        gathered = self.gathered
        for sample in gathered.keys() & sketch:            # (usually a few samples, or none)
            for slot, slot_bytes, count, refs in gathered[sample]:
                if slot < live_from:
                    continue
                counts[sample] = counts.get(sample, 0) + count
                if refs and sample in probe:
                    found.setdefault(sample, []).extend(slot_bytes + refs[i:i + _REF]
                                                        for i in range(0, len(refs), _REF))
        if self.postings:
            for sample in self.postings.keys() & sketch:
                for slot, other in self.postings[sample]:
                    if slot >= live_from:
                        counts[sample] = counts.get(sample, 0) + 1
                        if sample in probe:
                            found.setdefault(sample, []).append(other)
        if self.known_full:
            for sample in self.known_full.intersection(sketch):
                counts[sample] = DF_CAP
        boilerplate = frozenset(s for s, n in counts.items() if n >= DF_CAP) if counts else frozenset()
        self.reads.append((sketch, boilerplate))         # more refs keep boilerplate so
        candidates = self._candidates(found, counts)
        for other in (same_url, same_content, *candidates.values()):
            if other is not None and other.event_time >= oldest:
                self.safe_tmax = min(self.safe_tmax, other.event_time + self.window)
        return Evidence(stored, same_url, same_content, tuple(candidates.values()), boilerplate)

    def _candidates(self, found: dict[int, list[bytes]], counts: dict[int, int]) -> dict[str, IndexedArticle]:
        """Originals that at least MIN_ANCHOR_HITS of the item's samples which are not boilerplate index."""
        hits: dict[bytes, int] = {}
        for sample, keys in found.items():
            if counts[sample] < DF_CAP:
                for key in keys:
                    hits[key] = hits.get(key, 0) + 1
        out = {}
        for key, n in hits.items():
            if n < MIN_ANCHOR_HITS:
                continue
            if len(key) == _REF:                          # written by this batch
                record = self.records[key]
            else:
                raw = self.fetched.get(key)
                if raw is None:                           # gone (expired) since it was indexed
                    continue
                record = self._record(raw)
            out.setdefault(record.article_id, record)
        return out

    def _write(self, ref: bytes, item: DedupInput, fp: Fingerprint, outcome: DedupOutcome, slot: int,
               url: bool = True, url_version: str | None = None, headline_only: bool | None = None) -> None:
        self.stored[ref] = outcome
        indexed = _indexed(outcome)
        record = IndexedArticle(item.article_id, item.event_time, fp.content_key, fp.level,
                                fp.sketch if indexed else (), fp.title_words, fp.body_supports_title,
                                outcome.duplicate_of, fp.headline_only if headline_only is None else headline_only,
                                url_version)
        self.records[ref] = record
        tag = _U16.pack(slot) + b"\x08"                  # slot, then the length of an 8-byte field
        value = b"\x00\x00\x00\x08" + ref                 # an 8-byte value: the ref
        encoded = _encode_record(record, outcome)
        writes, written = self.writes, self.written
        writes.append(b"a" + tag + ref + _U32.pack(len(encoded)) + encoded)
        written.append(b"a" + ref)
        if url:
            self.urls.setdefault(fp.url_key, {})[slot] = ref
            writes.append(b"u" + tag + fp.url_key + value)
            written.append(b"u" + fp.url_key)
        if not indexed:
            return
        self.contents.setdefault(fp.content_key, {}).setdefault(slot, ref)
        writes.append(b"c" + tag + fp.content_key + value)
        written.append(b"c" + fp.content_key)
        anchors = fp.anchors
        packed = struct.pack(f">{len(anchors)}I", *anchors)
        head = b"x" + _U16.pack(slot) + b"\x04"
        postings = self.postings
        for i, anchor in enumerate(anchors):
            sample = packed[4 * i:4 * i + 4]
            postings.setdefault(anchor, []).append((slot, ref))
            writes.append(head + sample + value)
            written.append(b"x" + sample)


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SLOTS = struct.Struct(">HH")
_POSTING = struct.Struct(">HIBB")
_JSON = json.JSONEncoder(separators=(",", ":")).encode

_TAG_LEN = {ord("a"): _REF, ord("u"): 8, ord("c"): 8, ord("x"): 4}


def _take(raw: bytes, p: int) -> tuple[bytes | None, int]:
    """A length-prefixed value at p (None when empty) and the position after it."""
    (n,) = _U32.unpack_from(raw, p)
    return (raw[p + 4:p + 4 + n] if n else None), p + 4 + n


def _read_set(items, prints, samples) -> set[bytes]:
    """The tagged fields (as writers log them) whose change could change a decision of the batch: its own
    refs, URL and content keys, and the samples it read that were not boilerplate already (a posting only
    grows, and a sample indexing DF_CAP originals stays boilerplate)."""
    out = {b"x" + _sample_bytes(s) for s in samples}
    for item, fp in zip(items, prints):
        out.update((b"a" + _ref(item.article_id), b"u" + fp.url_key, b"c" + fp.content_key))
    return out


def _disjoint(entry: bytes, read_set: set[bytes]) -> bool:
    p = 0
    while p < len(entry):
        n = _TAG_LEN[entry[p]]
        if entry[p:p + 1 + n] in read_set:
            return False
        p += 1 + n
    return True


def _may_match_in_batch(prints: Sequence[Fingerprint]) -> list[int]:
    """Per item, 1 when MIN_ANCHOR_HITS of its probe samples are anchors of one earlier item of the batch (which
    may be indexed before it is decided): its other samples must then be read for their boilerplate."""
    owners: dict[int, list[int]] = {}   # anchor -> earlier items indexed under it
    out = []
    for i, fp in enumerate(prints):
        hits = Counter(j for sample in fp.probes for j in owners.get(sample, ()))
        out.append(int(any(n >= MIN_ANCHOR_HITS for n in hits.values())))
        for anchor in set(fp.anchors):
            owners.setdefault(anchor, []).append(i)
    return out


def _packed(samples: Sequence[int]) -> bytes:
    """Samples as GATHER reads them: 4 bytes each, big-endian."""
    return struct.pack(f">{len(samples)}I", *samples)


def _indexed(outcome: DedupOutcome) -> bool:
    """Originals and rewrites carry text of their own: later copies of them must find them."""
    return outcome.duplicate_of is None or outcome.kind == "rewrite"


def _ref(article_id: str) -> bytes:
    return xxhash.xxh3_64_digest(article_id.encode())


def _sample_bytes(sample: int) -> bytes:
    return _U32.pack(sample)


def _encode_record(record: IndexedArticle, outcome: DedupOutcome) -> bytes:
    """Compact JSON header (decision and comparison metadata), newline, then the packed sketch and title words."""
    header = [outcome.article_id, record.event_time, record.content_key.hex(), record.level,
              int(record.body_supports_title), len(record.sketch), outcome.duplicate_of, outcome.kind,
              outcome.similarity, outcome.update_of, outcome.matched, int(record.headline_only), record.url_version]
    words = sorted(record.title_words)
    binary = struct.pack(f"<{len(record.sketch)}I{len(words)}H", *record.sketch, *words)
    return _JSON(header).encode() + b"\n" + binary


def _split_record(raw: bytes) -> tuple[list, bytes]:
    header, _, binary = raw.partition(b"\n")
    return json.loads(header), binary


def _decode_record(raw: bytes) -> IndexedArticle:
    h, binary = _split_record(raw)
    n_sketch = h[5]
    values = struct.unpack(f"<{n_sketch}I{(len(binary) - 4 * n_sketch) // 2}H", binary)
    return IndexedArticle(article_id=h[0], event_time=h[1], content_key=bytes.fromhex(h[2]), level=h[3],
                          sketch=values[:n_sketch], title_words=frozenset(values[n_sketch:]),
                          body_supports_title=bool(h[4]), duplicate_of=h[6],
                          headline_only=bool(h[11]) if len(h) > 11 else None,  # None: written before it was kept
                          url_version=h[12] if len(h) > 12 else None)


def _decode_outcome(raw: bytes) -> DedupOutcome:
    h, _ = _split_record(raw)
    return DedupOutcome(article_id=h[0], duplicate_of=h[6], kind=h[7], similarity=h[8], update_of=h[9], matched=h[10])


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _chunks(iterable, size):
    chunk = []
    for value in iterable:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

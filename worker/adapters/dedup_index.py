"""Redis-backed duplicate index: atomic check-and-insert of a batch of articles.

Key layout (every key carries the hash tag `{<namespace>}`, so all of a namespace sits in one Redis Cluster
slot and the two scripts may touch several keys). Entries live in event-time generations of a quarter window,
so old ones leave by key expiry (live mode, `ttl_seconds`) or simply stop being read (batch mode):

    sw:{ns}:meta      HASH  ver (bumped by every commit), tmax (largest event time seen)
    sw:{ns}:<g>:a     HASH  ref -> record: the stored decision, plus the sketch for originals
    sw:{ns}:<g>:u     HASH  url key -> ref of the article last seen at that canonical URL
    sw:{ns}:<g>:c     HASH  content key -> ref of the first original (or rewrite) with that content
    sw:{ns}:<g>:x     HASH  anchor sample -> refs of originals indexed under it (at most DF_CAP; a full
                            posting marks a sample shared by many unrelated originals: boilerplate)

`ref` is an 8-byte hash of the article id; `<g>` is floor(event_time / generation seconds).

One batch is two round trips: GATHER (a read-only script returning, per item, its stored decision and the
records it may match) and COMMIT (a script that applies the writes only if `ver` is unchanged). The decisions
are made in between by the pure core, item by item, each seeing the earlier items of the batch; when a
concurrent writer bumped `ver`, the batch is gathered and decided again. So every race has one winner and a
batch decides exactly as the same items one at a time would.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import xxhash

from worker.core.dedup import DedupInput, DedupOutcome, Evidence, IndexedArticle, decide
from worker.core.fingerprint import Fingerprint, fingerprint

DF_CAP = 4
_REF = 8
_GENERATIONS_PER_WINDOW = 4

_GATHER = """
local n_gen = tonumber(ARGV[1])
local function key(slot, part) return KEYS[1 + slot * 4 + part] end
local out = {redis.call('HGET', KEYS[1], 'ver') or '0', redis.call('HGET', KEYS[1], 'tmax') or ''}
local p = 2
while p <= #ARGV do
  local own, ref, url, content, n = tonumber(ARGV[p]), ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], tonumber(ARGV[p + 4])
  local samples = {}
  for i = 1, n do samples[i] = ARGV[p + 4 + i] end
  p = p + 5 + n
  local stored = redis.call('HGET', key(own, 1), ref) or false
  local by_url, by_content = false, false
  for slot = n_gen - 1, 0, -1 do
    local hit = redis.call('HGET', key(slot, 2), url)
    if hit then by_url = redis.call('HGET', key(slot, 1), hit) or false; break end
  end
  for slot = 0, n_gen - 1 do
    local hit = redis.call('HGET', key(slot, 3), content)
    if hit then by_content = redis.call('HGET', key(slot, 1), hit) or false; break end
  end
  local postings, records, seen = {}, {}, {}
  if n > 0 then
    for slot = 0, n_gen - 1 do
      local values = redis.call('HMGET', key(slot, 4), unpack(samples))
      for i = 1, n do
        local refs = values[i]
        if refs then
          postings[#postings + 1] = {samples[i], refs}
          for j = 1, #refs, 8 do
            local ref = string.sub(refs, j, j + 7)
            if not seen[ref] then
              seen[ref] = true
              records[#records + 1] = ref
              records[#records + 1] = redis.call('HGET', key(slot, 1), ref) or ''
            end
          end
        end
      end
    end
  end
  out[#out + 1] = {stored, by_url, by_content, postings, records}
end
return out
"""

_COMMIT = """
if (redis.call('HGET', KEYS[1], 'ver') or '0') ~= ARGV[1] then return 0 end
local cap, ttl = tonumber(ARGV[4]), tonumber(ARGV[3])
local touched = {}
for i = 5, #ARGV, 4 do
  local op, slot, f, v = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local k = KEYS[1 + slot * 4 + ({a = 1, u = 2, c = 3, x = 4})[op]]
  if op == 'c' then redis.call('HSETNX', k, f, v)
  elseif op == 'x' then
    local cur = redis.call('HGET', k, f) or ''
    if #cur < cap then redis.call('HSET', k, f, cur .. v) end
  else redis.call('HSET', k, f, v) end
  touched[k] = true
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
local tmax = tonumber(redis.call('HGET', KEYS[1], 'tmax') or '-1e308')
if tonumber(ARGV[2]) > tmax then redis.call('HSET', KEYS[1], 'tmax', ARGV[2]) end
if ttl then
  for k in pairs(touched) do redis.call('EXPIRE', k, ttl) end
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
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

    def check_and_insert(self, items: Sequence[DedupInput]) -> list[DedupOutcome]:
        """Decide each item in order (later items see earlier ones of the same batch) and index the originals, atomically."""
        if not items:
            return []
        prints = [fingerprint(i.canonical_url, i.title, i.text) for i in items]
        while True:
            gens = self._generations(items)
            keys = [self._prefix + "meta"] + [self._prefix + f"{g}:{p}" for g in gens for p in "aucx"]
            reply = self._gather(keys=keys, args=self._gather_args(items, prints, gens))
            version, tmax = reply[0], float(reply[1]) if reply[1] else -math.inf
            if self._gen(tmax) > gens[-1]:
                self._tmax = tmax
                continue
            batch = _Batch(gens, tmax, self._window)
            outcomes = [batch.decide(item, fp, raw, self._gen(item.event_time))
                        for item, fp, raw in zip(items, prints, reply[2:])]
            if not batch.writes:
                return outcomes
            args = [version, repr(batch.now), self._ttl if self._ttl else "", DF_CAP * _REF, *batch.writes]
            if self._commit(keys=keys, args=args):
                self._tmax = max(self._tmax, batch.now)
                return outcomes
            self._tmax = max(self._tmax, tmax)

    def drop(self) -> None:
        """Delete every key of the namespace (batch mode cleanup)."""
        for chunk in _chunks(self._redis.scan_iter(match=_glob_escape(self._prefix) + "*", count=1000), 500):
            self._redis.unlink(*chunk)

    def _gen(self, event_time: float) -> int:
        if not math.isfinite(self._generation) or not math.isfinite(event_time):
            return 0
        return math.floor(event_time / self._generation)

    def _generations(self, items: Sequence[DedupInput]) -> list[int]:
        """Generations that may hold a live match for some item, plus each item's own (for its stored decision)."""
        nows = []
        now = self._tmax
        for item in items:
            now = max(now, item.event_time)
            nows.append(now)
        low = self._gen(min(nows) - self._window) if math.isfinite(self._window) else self._gen(min(nows))
        gens = set(range(low, self._gen(nows[-1]) + 1)) | {self._gen(i.event_time) for i in items}
        return sorted(gens)

    def _gather_args(self, items, prints, gens) -> list:
        slot = {g: s for s, g in enumerate(gens)}
        args: list = [len(gens)]
        for item, fp in zip(items, prints):
            args += [slot[self._gen(item.event_time)], _ref(item.article_id), fp.url_key, fp.content_key,
                     len(fp.sketch), *(_sample_bytes(s) for s in fp.sketch)]
        return args


@dataclass
class _Batch:
    """Decides the items of one batch in order over the gathered evidence plus the batch's own writes."""
    gens: list[int]
    now: float
    window: float
    writes: list = field(default_factory=list)
    records: dict = field(default_factory=dict)         # ref -> IndexedArticle written by this batch
    urls: dict = field(default_factory=dict)            # url key -> (ref, content key)
    contents: dict = field(default_factory=dict)        # content key -> ref
    postings: dict = field(default_factory=dict)        # (slot, sample) -> refs appended by this batch
    stored: dict = field(default_factory=dict)          # ref -> outcome decided in this batch

    def decide(self, item: DedupInput, fp: Fingerprint, raw: list, gen: int) -> DedupOutcome:
        self.now = max(self.now, item.event_time)
        ref = _ref(item.article_id)
        evidence = self._evidence(ref, fp, raw)
        outcome = decide(item, fp, evidence, self.now, self.window)
        if evidence.stored is None:
            self._write(ref, item, fp, outcome, self.gens.index(gen))
        return outcome

    def _evidence(self, ref: bytes, fp: Fingerprint, raw: list) -> Evidence:
        stored_raw, by_url, by_content, postings, flat_records = raw
        stored = self.stored.get(ref) or (_decode_outcome(stored_raw) if stored_raw else None)
        same_url = None
        if fp.url_key in self.urls:
            same_url = self.records[self.urls[fp.url_key]]
        elif by_url:
            same_url = _decode_record(by_url)
        if by_content:
            same_content = _decode_record(by_content)
        else:
            same_content = self.records.get(self.contents.get(fp.content_key))
        counts: dict[bytes, int] = {}
        found: dict[bytes, list[IndexedArticle]] = {}
        records = {ref: _decode_record(rec) for ref, rec in zip(flat_records[::2], flat_records[1::2]) if rec}
        for sample, refs in postings:
            counts[sample] = counts.get(sample, 0) + len(refs) // _REF
            found.setdefault(sample, []).extend(
                records[r] for r in (refs[i:i + _REF] for i in range(0, len(refs), _REF)) if r in records)
        own_samples = {_sample_bytes(s) for s in fp.sketch}
        for (slot, sample), refs in self.postings.items():
            if sample in own_samples:
                counts[sample] = counts.get(sample, 0) + len(refs)
                found.setdefault(sample, []).extend(self.records[r] for r in refs)
        boilerplate = frozenset(_sample_int(s) for s, n in counts.items() if n >= DF_CAP)
        candidates = {a.article_id: a for s, arts in found.items() if counts[s] < DF_CAP for a in arts}
        return Evidence(stored, same_url, same_content, tuple(candidates.values()), boilerplate)

    def _write(self, ref: bytes, item: DedupInput, fp: Fingerprint, outcome: DedupOutcome, slot: int) -> None:
        self.stored[ref] = outcome
        record = IndexedArticle(item.article_id, item.event_time, fp.content_key, fp.level,
                                fp.sketch if _indexed(outcome) else (), fp.title_words,
                                fp.body_supports_title, outcome.duplicate_of)
        self.records[ref] = record
        self.writes += ["a", slot, ref, _encode_record(record, outcome)]
        self.urls[fp.url_key] = ref
        self.writes += ["u", slot, fp.url_key, ref]
        if not _indexed(outcome):
            return
        self.contents.setdefault(fp.content_key, ref)
        self.writes += ["c", slot, fp.content_key, ref]
        for anchor in fp.anchors:
            sample = _sample_bytes(anchor)
            refs = self.postings.setdefault((slot, sample), [])
            refs.append(ref)
            self.writes += ["x", slot, sample, ref]


def _indexed(outcome: DedupOutcome) -> bool:
    """Originals and rewrites carry text of their own: later copies of them must find them."""
    return outcome.duplicate_of is None or outcome.kind == "rewrite"


def _ref(article_id: str) -> bytes:
    return xxhash.xxh3_64_digest(article_id.encode())


def _sample_bytes(sample: int) -> bytes:
    return struct.pack(">I", sample)


def _sample_int(sample: bytes) -> int:
    return struct.unpack(">I", sample)[0]


def _encode_record(record: IndexedArticle, outcome: DedupOutcome) -> bytes:
    """Compact JSON header (decision and comparison metadata), newline, then the packed sketch and title words."""
    header = [outcome.article_id, record.event_time, record.content_key.hex(), record.level,
              int(record.body_supports_title), len(record.sketch), outcome.duplicate_of, outcome.kind,
              outcome.similarity, outcome.update_of, outcome.matched]
    words = sorted(record.title_words)
    binary = struct.pack(f"<{len(record.sketch)}I{len(words)}H", *record.sketch, *words)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + binary


def _split_record(raw: bytes) -> tuple[list, bytes]:
    header, _, binary = raw.partition(b"\n")
    return json.loads(header), binary


def _decode_record(raw: bytes) -> IndexedArticle:
    h, binary = _split_record(raw)
    n_sketch = h[5]
    values = struct.unpack(f"<{n_sketch}I{(len(binary) - 4 * n_sketch) // 2}H", binary)
    return IndexedArticle(article_id=h[0], event_time=h[1], content_key=bytes.fromhex(h[2]), level=h[3],
                          sketch=values[:n_sketch], title_words=frozenset(values[n_sketch:]),
                          body_supports_title=bool(h[4]), duplicate_of=h[6])


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

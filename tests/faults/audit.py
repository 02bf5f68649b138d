"""What every fault scenario checks afterwards: the output topics and Redis, audited against the input.

- Every input offset is accounted for: exactly one story decision (an event whose `article.id` is that
  article) or one dead letter. Redelivery may re-emit an identical event (same story id, version, action),
  so decisions are counted per distinct article id and must agree with each other.
- No article is counted twice: per story, every version is caused by one article (no two articles share a
  version, no article owns two versions), versions run 1..N without gaps, and the final `article_count +
  copies` equals the number of distinct articles that joined (also checked against the story in Redis).
- No story is split by a fault: the partition of articles into stories equals the one a fault-free reference
  run of the same input gives (the batch-mode pipeline, in process).

Input articles are generated here: short invented reports (1-3 sentences) of invented events, each event with
its own people, place, organisation and words (no two events share one), a few syndicated copies. Messages
are keyed by event, so one event's reports stay in one partition and in order, and the story partition does
not depend on how a group of workers interleaves partitions.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

_SYL = ["ka", "lo", "mi", "ran", "tes", "vo", "bel", "dor", "fin", "gra", "hal", "jen", "kor", "lem", "nar",
        "pol", "quin", "ros", "sal", "tor", "ul", "ven", "wil", "yor", "zan", "ber", "cas", "del", "mar"]
_TEMPLATES = ["{person} {w1} the {w2} in {place}.",
              "The {org} said the {w2} {w3} {n} people.",
              "Officials in {place} {w1} that the {w4} would {w3}.",
              "{person}, who leads the {org}, {w4} the {w2}."]


def _unique_name(index: int, role: int) -> str:
    """A made-up word, distinct for every (event, role): (8 * index + role) * 7919 mod 29**4 is one-to-one."""
    value = ((8 * index + role) * 7919) % len(_SYL) ** 4
    out = []
    for _ in range(4):
        value, digit = divmod(value, len(_SYL))
        out.append(_SYL[digit])
    return "".join(out).capitalize()


def make_articles(count: int, seed: int = 7, copy_rate: float = 0.1, reports_per_event: int = 3) -> list[dict]:
    """`count` short articles in time order; each carries `_event` (its message key), not sent in the JSON."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    out: list[dict] = []
    by_event: dict[int, list[dict]] = defaultdict(list)
    event = -1
    ev: dict = {}
    for i in range(count):
        when = (start + dt.timedelta(seconds=20 * i)).isoformat()
        earlier = by_event.get(event) or []
        if earlier and rng.random() < copy_rate:
            src = rng.choice(earlier)
            art = {**src, "id": f"f{seed}-{i}", "source": f"wire{rng.randint(1, 40)}.example",
                   "url": src["url"].replace("https://", f"https://wire{i}.") + "?utm_source=rss",
                   "text": f"{ev['place'].upper()} (Wire) - {src['text']}", "published_at": when}
        else:
            if i % reports_per_event == 0 or not ev:
                event += 1
                ev = {"person": f"{_unique_name(event, 0)} {_unique_name(event, 1)}",
                      "place": _unique_name(event, 2), "org": f"{_unique_name(event, 3)} Group",
                      "n": rng.randint(2, 900), **{f"w{k}": _unique_name(event, 3 + k).lower() for k in range(1, 5)}}
            body = " ".join(rng.choice(_TEMPLATES).format(**ev) for _ in range(rng.randint(1, 3)))
            art = {"id": f"f{seed}-{i}", "url": f"https://news{i % 50}.example/{seed}/{i}",
                   "source": f"news{i % 50}.example",
                   "title": f"{ev['person']} {ev['w1']} {ev['w2']} in {ev['place']}", "text": body,
                   "published_at": when, "language": "en"}
        art["_event"] = event
        by_event[event].append(art)
        out.append(art)
    return out


def encode(articles: list[dict]) -> tuple[list[bytes], list[bytes]]:
    """Message values and keys (the event) for DevStack.produce."""
    values = [json.dumps({k: v for k, v in a.items() if not k.startswith("_")}).encode() for a in articles]
    keys = [f"event-{a['_event']}".encode() for a in articles]
    return values, keys


# -- the reference run ------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _extractor():
    from worker.core.entities import EntityExtractor

    return EntityExtractor(batch_size=64)


_REFERENCES: dict[int, dict[str, str]] = {}


def reference_stories(values: list[bytes], redis_url: str) -> dict[str, str]:
    """article id -> story id from a fault-free batch-mode run of the same messages, in input order.

    Cached per input (scenarios share corpora); `redis_url` only says where to run it (its own namespace,
    deleted afterwards).
    """
    import redis

    from worker.models import SourceRecord
    from worker.pipeline import Incoming, Pipeline
    from worker.settings import Settings

    cache_key = hash(tuple(values))
    if cache_key in _REFERENCES:
        return _REFERENCES[cache_key]
    client = redis.Redis.from_url(redis_url)
    pipeline = Pipeline(Settings(redis_url=redis_url), client, f"ref-{uuid.uuid4().hex[:8]}", live=False,
                        extractor=_extractor())
    out: dict[str, str] = {}
    try:
        for start in range(0, len(values), 64):
            batch = [Incoming(value=v, source=SourceRecord(topic=None, partition=None, offset=start + n,
                                                           timestamp=None))
                     for n, v in enumerate(values[start:start + 64])]
            for result in pipeline.process(batch):
                if result.decision.story_id:
                    out[result.decision.id] = result.decision.story_id
    finally:
        pipeline.drop_state()
        client.close()
    _REFERENCES[cache_key] = out
    return out


# -- driving helpers ----------------------------------------------------------------------------------------

def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition()` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def progress(stack) -> int:
    """Input records committed by the group (all partitions)."""
    return sum(stack.committed().values())


def logged(worker, event: str) -> list[dict]:
    return [line for line in worker.log_lines() if line.get("event") == event]


def retrying_in_a_redis_outage(stack, redis_service, values: list[bytes], keys: list[bytes]):
    """A worker commits its first batches of a third of the articles; then Redis pauses and the rest arrives.
    Returns the worker once it retries a batch (the caller resumes Redis; the fixture does if it fails)."""
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    third = len(values) // 3
    stack.produce(values[:third], keys[:third])
    wait_until(lambda: progress(stack) >= 32, 120, "first commits")
    redis_service.pause()
    retries = len(logged(worker, "batch_retry"))
    stack.produce(values[third:], keys[third:])  # work arrives during the outage
    wait_until(lambda: len(logged(worker, "batch_retry")) > retries, 60, "a batch_retry warning")
    return worker


def rss_kb(pid: int) -> int:
    """Resident set size of a live process, from /proc."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def assert_alive(*workers) -> None:
    for w in workers:
        assert w.process.poll() is None, (f"{w.name} exited {w.process.returncode}: "
                                          f"{w.log_path.read_text(errors='replace')[-2000:]}")


# -- the audit ----------------------------------------------------------------------------------------------

@dataclass
class Report:
    inputs: int = 0
    expected_bad: int = 0
    decided: int = 0                 # distinct article ids with a story decision
    dead_lettered: int = 0           # distinct input offsets with a dead letter
    lost: list = field(default_factory=list)            # input offsets with neither
    both: list = field(default_factory=list)            # an offset with a decision and a dead letter
    inconsistent: list = field(default_factory=list)    # article ids with two different decisions
    bad_not_dead: list = field(default_factory=list)    # expected-bad offsets that got no dead letter
    good_dead: list = field(default_factory=list)       # expected-good offsets that were dead-lettered
    dead_without_reason: int = 0
    double_counted: list = field(default_factory=list)  # stories whose counts/versions do not add up
    stories: int = 0
    reference_stories: int | None = None
    split: list = field(default_factory=list)           # reference stories spread over several stories
    merged: list = field(default_factory=list)          # stories holding articles of several reference stories
    redis_mismatch: list = field(default_factory=list)  # story state in Redis disagrees with the events
    reemitted_events: int = 0                           # identical re-emissions (allowed)

    @property
    def duplicate_stories(self) -> int:
        """Stories beyond the reference's count (a fault that founded a second story for one event)."""
        return max(0, self.stories - self.reference_stories) if self.reference_stories is not None else 0

    def summary(self) -> str:
        return (f"inputs={self.inputs} decided={self.decided} dead_lettered={self.dead_lettered} "
                f"lost={len(self.lost)} both={len(self.both)} inconsistent={len(self.inconsistent)} "
                f"double_counted={len(self.double_counted)} stories={self.stories} "
                f"reference_stories={self.reference_stories} duplicate_stories={self.duplicate_stories} "
                f"split={len(self.split)} merged={len(self.merged)} redis_mismatch={len(self.redis_mismatch)} "
                f"bad_not_dead={len(self.bad_not_dead)} good_dead={len(self.good_dead)} "
                f"reemitted_events={self.reemitted_events}")

    def assert_clean(self, context: str = "") -> None:
        problems = {name: getattr(self, name)[:5] for name in
                    ("lost", "both", "inconsistent", "bad_not_dead", "good_dead", "double_counted", "split",
                     "merged", "redis_mismatch") if getattr(self, name)}
        if self.dead_without_reason:
            problems["dead_without_reason"] = self.dead_without_reason
        assert not problems, f"{context} audit failed: {self.summary()} first problems: {problems}"


def audit(stack, *, expected_bad: set[tuple[int, int]] | None = None, reference: dict[str, str] | None = None,
          check_redis: bool = True, events: list[dict] | None = None, letters: list[dict] | None = None) -> Report:
    """Audit a DevStack's output topics (and Redis) against its input topic.

    expected_bad: (partition, offset) of inputs that must be dead-lettered, every other one decided (None: no
    such expectation; every input, by the `id` its JSON carries, must still be decided or dead-lettered, never
    both: callers count the decided). reference: article id -> story id of a clean run.
    """
    inputs = stack.read_topic(stack.settings.input_topic)
    events = stack.events() if events is None else events
    letters = stack.dead_letters() if letters is None else letters
    rep = Report(inputs=len(inputs))

    by_article: dict[str, set[tuple]] = defaultdict(set)
    by_story: dict[str, dict[int, set]] = defaultdict(lambda: defaultdict(set))
    final: dict[str, dict] = {}
    seen_events: set[tuple] = set()
    for e in events:
        art = e.get("article")
        sig = (e["story_id"], e["version"], e["event"], art["id"] if art else None)
        if sig in seen_events:
            rep.reemitted_events += 1
            continue
        seen_events.add(sig)
        if art:
            by_article[art["id"]].add((e["story_id"], e["version"], e["event"]))
        by_story[e["story_id"]][e["version"]].add((e["event"], art["id"] if art else None))
        if e["story_id"] not in final or e["version"] > final[e["story_id"]]["version"]:
            final[e["story_id"]] = e
    dead_at = defaultdict(list)
    for d in letters:
        dead_at[(d["source"]["partition"], d["source"]["offset"])].append(d)
        rep.dead_without_reason += not (d.get("reason") and d.get("error_class"))

    for r in inputs:
        where = (r.partition, r.offset)
        aid = _article_id(r.value)
        decided = aid is not None and aid in by_article
        dead = where in dead_at
        if expected_bad is not None:
            if where in expected_bad:
                rep.expected_bad += 1
                if not dead:
                    rep.bad_not_dead.append(where)
            elif dead:
                rep.good_dead.append((where, dead_at[where][0]["reason"][:200]))
        if decided and dead:
            rep.both.append(where)
        elif not decided and not dead:
            rep.lost.append((where, aid))
    rep.decided = len(by_article)
    rep.dead_lettered = len(dead_at)
    rep.inconsistent = [(a, sorted(d)) for a, d in by_article.items() if len(d) > 1]

    members: dict[str, set[str]] = defaultdict(set)
    for aid, decisions in by_article.items():
        for story_id, _, _ in decisions:
            members[story_id].add(aid)
    for story_id, versions in by_story.items():
        arts = [a for causes in versions.values() for _, a in causes if a]
        problem = None
        if any(len(causes) > 1 for causes in versions.values()):
            problem = "two events with one version"
        elif sorted(versions) != list(range(1, len(versions) + 1)):
            problem = f"versions not 1..N: {sorted(versions)[:10]}"
        elif len(arts) != len(set(arts)):
            problem = "an article caused two versions"
        else:
            state = final[story_id]["story"]
            if state["article_count"] + state.get("copies", 0) != len(set(arts)):
                problem = (f"article_count {state['article_count']} + copies {state.get('copies', 0)} != "
                           f"{len(set(arts))} articles")
        if problem:
            rep.double_counted.append((story_id, problem))
    rep.stories = len(members)

    if check_redis:
        ns = stack.env["SW_REDIS_NAMESPACE"]
        for story_id, e in final.items():
            raw = stack.redis.get(f"sw:{{{ns}}}:story:{story_id}")
            if raw is None:
                rep.redis_mismatch.append((story_id, "missing"))
                continue
            state = json.loads(raw)
            if state.get("version") != e["version"] or state.get("article_count") != e["story"]["article_count"] \
                    or state.get("copies", 0) != e["story"].get("copies", 0):
                rep.redis_mismatch.append((story_id, {k: state.get(k) for k in ("version", "article_count",
                                                                                 "copies")},
                                           {"version": e["version"], **{k: e["story"].get(k) for k in
                                                                        ("article_count", "copies")}}))

    if reference is not None:
        ref_members: dict[str, set[str]] = defaultdict(set)
        for aid, story_id in reference.items():
            ref_members[story_id].add(aid)
        rep.reference_stories = len(ref_members)
        actual_of = {aid: next(iter(d))[0] for aid, d in by_article.items()}
        for story_id, aids in ref_members.items():
            got = {actual_of.get(a) for a in aids if a in actual_of}
            if len(got) > 1:
                rep.split.append((story_id, sorted(aids)[:6], len(got)))
        ref_of = reference
        for story_id, aids in members.items():
            refs = {ref_of.get(a) for a in aids}
            if len(refs) > 1:
                rep.merged.append((story_id, sorted(aids)[:6], len(refs)))
    return rep


def _article_id(value: bytes | None) -> str | None:
    try:
        data = json.loads(value or b"")
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def diagnosis(stack) -> str:
    """What a failed scenario leaves to read: per input partition its committed offset and its records, and per
    worker its exit, its last assignment, its warnings and errors (counted, the last few whole) and its last
    stats line."""
    out = [f"workdir {stack.workdir}"]
    try:
        ends: dict[int, int] = defaultdict(int)
        for r in stack.read_topic(stack.settings.input_topic):
            ends[r.partition] = max(ends[r.partition], r.offset + 1)
        committed = stack.committed()
        out += [f"partition {p}: committed {committed.get(p, 0)} of {ends.get(p, 0)}"
                for p in range(stack.partitions)]
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure it explains
        out.append(f"offsets unavailable: {exc!r}")
    for worker in stack.workers:
        lines = worker.log_lines()
        loud = [line for line in lines if line.get("level") in ("warning", "error", "critical")]
        counts = defaultdict(int)
        for line in loud:
            counts[line.get("event")] += 1
        stats = [line for line in lines if line.get("event") == "stats"]
        assigned = [line.get("partitions") for line in lines if line.get("event") == "partitions_assigned"]
        out.append(f"{worker.name}: exit {worker.process.poll()}, last assigned {assigned[-1:]}, "
                   f"warnings/errors {dict(counts)}")
        out += [f"  {json.dumps(line)[:400]}" for line in loud[-8:]]
        if stats:
            out.append(f"  last stats {json.dumps(stats[-1])[:400]}")
    return "\n".join(out)

"""Clustering-stage throughput and per-article cost with few vs many stories ever seen.

Synthetic articles (self-written generator): each event has its own place and people drawn from a large
name pool and a few reports spread over a day or two; event time advances steadily, so with a fixed window
the active stories stay bounded while the stories ever seen keep growing. Runs StoryStore on Redis
(REDIS_URL, default redis://127.0.0.1:6379/0) in a throw-away namespace.

    python bench/bench_cluster.py [--articles 12000] [--batch 32] [--probe 1000] [--model]

Two stores see the same stream: the large one all of it, the small one only its last window (the stories
that can still be active). Both then assign the same fresh articles, batch by batch in turn, so the ratio of
their per-article costs is what the number of stories ever seen costs. Likewise for the size of one story:
three stores hold one long-running story (every report names a few new people and words, so its index keys
keep growing) of 20, 1/4 of `--long-story` and `--long-story` reports, and all take the same further reports.
A story's state is capped (entities, words, index keys, times, member vectors: ClusterConfig), and a story
of 20 reports is still below the caps, so joining it is cheaper; the two larger ones are both at the caps,
and their ratio is what growing further costs.

About one report in four is a bare headline (no body and no entities: NER misses names in headlines), so the
figures include matching the candidate stories' names against it. Each synthetic article carries a lead
embedding (a unit vector near its event's own direction), so the figures are the clustering stage alone;
`--model` also times the ONNX lead embedder on the synthetic leads (that cost sits in front of the stage, once
per new article).

Story state in Redis, bytes per article: `MEMORY USAGE` summed over the large store's keys after the history
(stories, their index, document frequencies and the per-article records), every story kept (a live store
lets a story's keys expire a TTL after its last report). The stores' keys expire within an hour should the
run be killed before its cleanup.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
import uuid

import redis

from worker.adapters.story_store import StoryStore
from worker.core.cluster import DAY, ClusterInput
from worker.core.embedding import DIM, lead_of
from worker.core.entities import Entity

VOCABULARY = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in ("ar", "en", "il", "or", "u") for c in "dgkmnstvxz"]


def _unit_near(rng: random.Random, centre: list[float], spread: float) -> list[float]:
    vector = [c + rng.gauss(0.0, spread) for c in centre]
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


def synthetic_articles(count: int, seed: int = 7, bare_share: float = 0.25) -> list[ClusterInput]:
    rng = random.Random(seed)
    common = [rng.gauss(0.0, 1.0) for _ in range(DIM)]  # what all the news of a stream shares
    items, t, event = [], 1_600_000_000.0, 0
    while len(items) < count:
        event += 1
        place, person = f"Place{rng.randrange(20_000)}", f"Person{rng.randrange(50_000)} Surname{event}"
        kind, *details = rng.sample(VOCABULARY, 21)
        centre = [c + rng.gauss(0.0, 1.0) for c in common]
        for copy in range(rng.randint(1, 4)):
            words = [kind, place.lower()] + rng.sample(details, 12) + [kind]
            text = " ".join(words) + f". {person} told reporters."
            entities = [Entity(place, "GPE", 0, len(place), place, "text"),
                        Entity(person, "PERSON", 0, len(person), person, "text")]
            if rng.random() < bare_share:
                text, entities = None, []
            items.append(ClusterInput(f"syn-{len(items)}", f"{kind.title()} in {place}", text, f"outlet{copy}",
                                      f"https://syn.example/{len(items)}", t + copy * 0.3 * DAY, entities, "en",
                                      _unit_near(rng, centre, 0.3)))
        t += 0.05 * DAY  # about 20 events a day
    items.sort(key=lambda i: i.event_time)
    return items[:count]


def one_long_story(count: int, start: float, step: float, seed: int = 11) -> list[ClusterInput]:
    """Reports of one event, one every `step` seconds from `start`: its place and mayor, and each a name and a
    few words of its own."""
    rng = random.Random(seed)
    centre = [rng.gauss(0.0, 1.0) for _ in range(DIM)]
    items = []
    for n in range(count):
        names = ["Harbour City", "Mayor Ada Quist", f"Person{rng.randrange(10**6)}"]
        entities = [Entity(name, "GPE" if k == 0 else "PERSON", 0, len(name), name, "text")
                    for k, name in enumerate(names)]
        title = "Harbour City flood inquiry " + " ".join(rng.sample(VOCABULARY, 3))
        text = f"{title}. {' and '.join(names)} spoke about the flood inquiry and the harbour wall."
        items.append(ClusterInput(f"long-{n}", title, text, f"outlet{n % 7}", f"https://syn.example/long/{n}",
                                  start + step * n, entities, "en", _unit_near(rng, centre, 0.3)))
    return items


def timed(store: StoryStore, items: list[ClusterInput], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        store.assign(items[i:i + batch])
    return time.perf_counter() - start


def probe(stores: list[StoryStore], items: list[ClusterInput], batch: int) -> tuple[list[float], list[int]]:
    """Per store, the seconds spent assigning `items` and how many of them joined a story; the stores take
    turns batch by batch, so a shared machine's drift weighs on both alike."""
    spent, joined = [0.0] * len(stores), [0] * len(stores)
    for i in range(0, len(items), batch):
        for k, store in enumerate(stores):
            start = time.perf_counter()
            changes = store.assign(items[i:i + batch])
            spent[k] += time.perf_counter() - start
            joined[k] += sum(c.action == "article_added" for c in changes)
    return spent, joined


def state_bytes(client: redis.Redis, namespace: str) -> int:
    """Bytes Redis holds for a namespace: MEMORY USAGE of each of its keys (values, key names, overhead)."""
    total, keys = 0, list(client.scan_iter(match=f"sw:{{{namespace}}}:*", count=1000))
    for i in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[i:i + 1000]:
            pipe.memory_usage(key, samples=0)
        total += sum(size or 0 for size in pipe.execute())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=12000, help="history of the large store")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--probe", type=int, default=1000, help="fresh articles timed on both stores")
    parser.add_argument("--model", action="store_true", help="also time the ONNX lead embedder")
    parser.add_argument("--long-story", type=int, default=1000, help="reports of the large long-running story")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # through the cleanup below
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    window = 7 * DAY
    items = synthetic_articles(args.articles + args.probe)
    history, fresh = items[:args.articles], items[args.articles:]
    # the small store has seen only the stories that can still be active when the probe starts
    recent = [i for i in history if i.event_time >= fresh[0].event_time - window - 2 * DAY]
    large = StoryStore(client, "bench-" + uuid.uuid4().hex, 3600, window_seconds=window,
                       frequencies_ttl_seconds=3600)
    small = StoryStore(client, "bench-" + uuid.uuid4().hex, 3600, window_seconds=window,
                       frequencies_ttl_seconds=3600)

    def stories(store: StoryStore) -> int:
        return sum(1 for _ in client.scan_iter(match=f"sw:{{{store.namespace}}}:story:*", count=1000))

    # The long story runs through the history, amid the other news (which sets the frequencies and mean), and
    # goes on after it at the same pace.
    start, end = history[0].event_time, history[-1].event_time
    long_story = one_long_story(args.long_story + 200, start, (end - start) / args.long_story)
    sizes = (20, args.long_story // 4, args.long_story)
    runs = [StoryStore(client, "bench-" + uuid.uuid4().hex, 3600, window_seconds=window,
                       frequencies_ttl_seconds=3600) for _ in sizes]
    try:
        fill = timed(large, history, args.batch)
        state = state_bytes(client, large.namespace)
        timed(small, recent, args.batch)
        seen = (stories(small), stories(large))
        active = [client.zcount(s._key("active"), fresh[0].event_time - window, "+inf") for s in (small, large)]
        (cost_small, cost_large), _ = probe([small, large], fresh, args.batch)
        for store, size in zip(runs, sizes):  # the latest `size` reports before the further ones
            reports = long_story[args.long_story - size:args.long_story]
            timed(store, sorted(history + reports, key=lambda i: i.event_time), args.batch)
        further = long_story[args.long_story:]
        costs, joined = probe(runs, further, args.batch)
    finally:
        for store in (large, small, *runs):
            store.drop()
    print(f"clustering stage: {len(history) / fill:.0f} articles/s ({len(history)} articles, batch {args.batch})")
    print(f"story state: {state / len(history):,.0f} bytes/article in Redis ({state / 1e6:.1f} MB for "
          f"{len(history)} articles in {seen[1]} stories, all kept)")
    print(f"probe of {len(fresh)} fresh articles, alternated batch by batch: "
          f"{1000 * cost_small / len(fresh):.2f} ms/article with {seen[0]} stories ever seen ({active[0]} active), "
          f"{1000 * cost_large / len(fresh):.2f} ms/article with {seen[1]} ({active[1]} active), "
          f"ratio {cost_large / cost_small:.2f}x")
    print(f"joining a long-running story, {len(further)} further reports alternated batch by batch: "
          + ", ".join(f"{1000 * cost / len(further):.2f} ms/article when it holds {size} reports"
                      for cost, size in zip(costs, sizes))
          + f" ({' / '.join(map(str, joined))} of them joined a story); ratio {sizes[2]} to {sizes[1]} reports "
          f"{costs[2] / costs[1]:.2f}x (both at the state caps), {sizes[2]} to {sizes[0]} {costs[2] / costs[0]:.2f}x")
    if args.model:
        from worker.core.embedding import Embedder
        embedder = Embedder()
        leads = [lead_of(i.title, i.text) for i in fresh]
        start = time.perf_counter()
        embedder.embed(leads)
        spent = time.perf_counter() - start
        print(f"lead embedder (ONNX MiniLM int8) on {len(leads)} synthetic leads: {len(leads) / spent:.0f} articles/s")


if __name__ == "__main__":
    main()

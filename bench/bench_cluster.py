"""Clustering-stage throughput and per-article cost with few vs many stories ever seen.

Synthetic articles (self-written generator): each event has its own place and people drawn from a large
name pool and a few reports spread over a day or two; event time advances steadily, so with a fixed window
the active stories stay bounded while the stories ever seen keep growing. Runs StoryStore on Redis
(REDIS_URL, default redis://127.0.0.1:6379/0) in a throw-away namespace.

    python bench/bench_cluster.py [--articles 12000] [--batch 32] [--model]

Each synthetic article carries a lead embedding (a unit vector near its event's own direction), so the figures
are the clustering stage alone; `--model` also times the ONNX lead embedder on the synthetic leads (that cost
sits in front of the stage, once per new article).
"""
from __future__ import annotations

import argparse
import os
import random
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


def synthetic_articles(count: int, seed: int = 7) -> list[ClusterInput]:
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
            items.append(ClusterInput(f"syn-{len(items)}", f"{kind.title()} in {place}", text, f"outlet{copy}",
                                      f"https://syn.example/{len(items)}", t + copy * 0.3 * DAY, entities, "en",
                                      _unit_near(rng, centre, 0.3)))
        t += 0.05 * DAY  # about 20 events a day
    items.sort(key=lambda i: i.event_time)
    return items[:count]


def timed(store: StoryStore, items: list[ClusterInput], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        store.assign(items[i:i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--probe", type=int, default=500, help="articles timed at the start and at the end")
    parser.add_argument("--model", action="store_true", help="also time the ONNX lead embedder")
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    store = StoryStore(client, "bench-" + uuid.uuid4().hex, None, window_seconds=7 * DAY)
    items = synthetic_articles(args.articles)
    try:
        half = len(items) // 2
        early = timed(store, items[:args.probe], args.batch)
        middle = timed(store, items[args.probe:half], args.batch)
        stories_at_half = sum(1 for _ in client.scan_iter(match=f"sw:{{{store.namespace}}}:story:*", count=1000))
        middle_probe = timed(store, items[half:half + args.probe], args.batch)
        middle += middle_probe + timed(store, items[half + args.probe:-args.probe], args.batch)
        active_before_late = client.zcount(store._key("active"), items[-args.probe].event_time - 7 * DAY, "+inf")
        late = timed(store, items[-args.probe:], args.batch)
        stories_ever = sum(1 for _ in client.scan_iter(match=f"sw:{{{store.namespace}}}:story:*", count=1000))
    finally:
        store.drop()
    total = early + middle + late
    print(f"articles: {len(items)}  batch: {args.batch}  stories ever seen: {stories_ever}  "
          f"active (in window) before the last probe: {active_before_late}")
    print(f"clustering stage: {len(items) / total:.0f} articles/s overall")
    print(f"per-article cost, first {args.probe} (few stories seen): {1000 * early / args.probe:.2f} ms")
    print(f"per-article cost, {args.probe} from the middle ({stories_at_half} stories seen): "
          f"{1000 * middle_probe / args.probe:.2f} ms")
    print(f"per-article cost, last {args.probe} ({stories_ever} stories seen): {1000 * late / args.probe:.2f} ms")
    print(f"ratio last/first: {late / early:.2f}   ratio last/middle: {late / middle_probe:.2f}")
    if args.model:
        from worker.core.embedding import Embedder
        embedder = Embedder()
        leads = [lead_of(i.title, i.text) for i in items[:args.probe]]
        start = time.perf_counter()
        embedder.embed(leads)
        spent = time.perf_counter() - start
        print(f"lead embedder (ONNX MiniLM int8) on {len(leads)} synthetic leads: {len(leads) / spent:.0f} articles/s")


if __name__ == "__main__":
    main()

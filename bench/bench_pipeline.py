"""Throughput of each pipeline stage and end to end, measured in one run on one machine.

  python bench/bench_pipeline.py [--articles 400] [--rounds 3] [--input FILE.jsonl] [--stream]

Stages are timed on the same articles in the same process: validate, dedup (Redis), enrich (NER), cluster
(the lead embedding and the story assignment on Redis; bench_cluster.py times the assignment alone), record,
then the whole batch-mode path; the staged pass and batch mode alternate for `--rounds` rounds, with the models
loaded and warmed before the first, and the figures are their medians (a shared machine's drift weighs on both
alike). With --stream, also the real worker process behind a real broker. Articles are self-generated
(bench/synthetic.py) unless --input names a JSON Lines file. Prints a JSON summary.
Redis: REDIS_URL when it answers, else a private redis-server.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import articles as synthetic_articles  # noqa: E402

from worker.adapters.local_services import redis_answers, start_redis  # noqa: E402
from worker.batch import run_batch  # noqa: E402
from worker.core.entities import EntityExtractor  # noqa: E402
from worker.models import SourceRecord  # noqa: E402
from worker.pipeline import Incoming, Pipeline  # noqa: E402
from worker.settings import Settings  # noqa: E402


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def stage_figures(settings: Settings, client: redis.Redis, lines: list[bytes], batch: int) -> dict:
    """Run the pipeline's stages one by one over all articles, timing each stage separately."""
    pipeline = Pipeline(settings, client, f"bench-{uuid.uuid4().hex[:8]}", live=False,
                        extractor=EntityExtractor(batch_size=settings.ner_batch_size))
    pipeline.extractor.extract([("warm up", "Warm up the model.")])
    pipeline.stories.embed_probe("warm up", "Warm up the model.")  # loaded before the clock starts
    totals = dict.fromkeys(("validate", "dedup", "enrich", "cluster", "record"), 0.0)
    try:
        for start in range(0, len(lines), batch):
            msgs = [Incoming(value=v, source=SourceRecord(topic=None, partition=None, offset=i, timestamp=None))
                    for i, v in enumerate(lines[start:start + batch], start)]
            results: dict = {}
            items, dt_ = timed(pipeline.validate, msgs, results)
            totals["validate"] += dt_
            _, dt_ = timed(pipeline.deduplicate, items)
            totals["dedup"] += dt_
            _, dt_ = timed(pipeline.enrich, items)
            totals["enrich"] += dt_
            _, dt_ = timed(pipeline.cluster, items)
            totals["cluster"] += dt_
            _, dt_ = timed(pipeline.record, items, results)
            totals["record"] += dt_
    finally:
        pipeline.drop_state()
    n = len(lines)
    return {f"{k}_articles_per_s": round(n / v, 1) for k, v in totals.items()}


def stream_figures(lines: list[bytes]) -> dict:
    """End to end through a real broker and one real worker process: first produce to last event."""
    from worker.devstack import DevStack

    ids = {json.loads(v)["id"] for v in lines}
    with DevStack() as stack:
        worker = stack.start_worker({"SW_MAX_BATCH": "128"})
        stack.wait_logged(worker, "partitions_assigned")
        t = time.perf_counter()
        stack.produce(lines)
        events, _ = stack.wait_accounted(ids, dead=0, timeout=600)
        secs = time.perf_counter() - t
        seen = {e["article"]["id"] for e in events if e.get("article")}
    return {"stream_articles": len(ids & seen), "stream_articles_per_s": round(len(ids & seen) / secs, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--articles", type=int, default=400)
    ap.add_argument("--input", type=Path, help="JSON Lines articles instead of synthetic ones")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="staged pass and batch mode alternated, medians kept")
    ap.add_argument("--stream", action="store_true", help="also measure the Kafka path with a worker process")
    a = ap.parse_args()
    if a.input:
        lines = [line for line in a.input.read_bytes().splitlines() if line.strip()][:a.articles]
    else:
        lines = [json.dumps(x).encode() for x in synthetic_articles(a.articles, seed=7)]
    settings = Settings()
    own = None
    url = settings.redis_dsn
    if not redis_answers(url):
        own = start_redis()
        url = f"redis://{own.address}/0"
    client = redis.Redis.from_url(url)
    try:
        words = sum(len(json.loads(v).get("text") or "") for v in lines) / 5.5 / len(lines)
        out = {"articles": len(lines), "mean_words": round(words), "batch": a.batch}
        rounds = []
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            src.write_bytes(b"\n".join(lines) + b"\n")
            for _ in range(a.rounds):
                figures = stage_figures(settings, client, lines, a.batch)
                figures["batch_mode_articles_per_s"] = run_batch(settings, client, src, dst,
                                                                 chunk=a.batch)["articles_per_s"]
                rounds.append(figures)
        out.update({k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]})
        out["rounds"] = a.rounds
        if a.stream:
            out.update(stream_figures(lines))
        slowest = min(v for k, v in out.items() if k.endswith("_articles_per_s") and k[:-15] in
                      ("validate", "dedup", "enrich", "cluster", "record"))
        out["end_to_end_over_slowest_stage"] = round(out["batch_mode_articles_per_s"] / slowest, 3)
        print(json.dumps(out, indent=2))
    finally:
        if own:
            own.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Story quality of the live worker against batch mode, on the labelled story sets in ../shared/data.

Batch mode (what `make evaluate` scores) decides articles one at a time in file order. A deployment decides them
in batches, several replicas at once, each partition in its own order. This streams a set through real
`story-worker run` processes behind a real broker (`DevStack`: tansu and a private Redis unless configured),
keyed by URL as `story-worker produce` keys them, reads the story topic back, takes each article's story from
its event, and scores both runs with ../shared/tools/score.py in the same process:

    python bench/stream_quality.py                                  # every story set, 2 workers, 4 partitions
    python bench/stream_quality.py --sets ecbplus_story_clusters --workers 3 --partitions 6
    python bench/stream_quality.py --pace 32     # 32 articles at a time: a live stream, not a backlog
    python bench/stream_quality.py --sets ecbplus_story_clusters --batch-orders 6   # and batch mode, shuffled

It also counts articles whose events name more than one story (a replay that re-decided an article: expected
0) and articles with no event.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ablate_cluster import SETS, SHARED  # noqa: E402
from worker.devstack import DevStack  # noqa: E402

STORY_SETS = [s for s in SETS if s != "seeds"]
FIGURES = ("bcubed_precision", "bcubed_recall", "bcubed_f1", "pairwise_f1", "pred_stories", "gold_stories")


def batch_decisions(path: Path, work: Path, env: dict[str, str]) -> tuple[list[dict], float]:
    """`story-worker batch` over the file, as ../shared/tools/evaluate.py runs it, with the workers' settings:
    (decisions, seconds)."""
    out = work / f"{path.stem}.batch.jsonl"
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "worker.cli", "batch", "--input", str(path), "--output", str(out)],
                         capture_output=True, text=True, env={**os.environ, **env})
    if run.returncode != 0:
        raise RuntimeError(f"batch mode failed ({run.returncode}): {run.stderr[-1500:]}")
    seconds = time.perf_counter() - started
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], seconds


def shuffled_batch_scores(path: Path, lines: list[bytes], orders: int, work: Path, env: dict[str, str],
                          gold: list[dict], score_stories) -> list[float]:
    """Batch mode's BCubed F1 over the set in `orders` random orders (seeds 1..orders): how much order alone
    moves the figures, the yardstick for a stream, whose order is the partitions'."""
    scores = []
    for seed in range(1, orders + 1):
        shuffled = lines[:]
        random.Random(seed).shuffle(shuffled)
        order_file = work / f"{path.parent.name}.order{seed}.jsonl"
        order_file.write_bytes(b"\n".join(shuffled) + b"\n")
        decisions, _ = batch_decisions(order_file, work, env)
        scores.append(score_stories(gold, decisions)["bcubed_f1"])
    return scores


def as_gold(decisions: list[dict]) -> list[dict]:
    """Batch decisions as gold rows: each article with its story, a duplicate (which may carry none) with its
    original's."""
    story = {d["id"]: d.get("story_id") for d in decisions}
    rows = [{"id": d["id"], "story_id": d.get("story_id") or story.get(d.get("duplicate_of"))} for d in decisions]
    return [row for row in rows if row["story_id"]]


def stream_decisions(lines: list[bytes], workers: int, partitions: int, pace: int | None,
                     env: dict[str, str]) -> tuple[list[dict], float, dict]:
    """The lines through `workers` worker processes: (a decision per article seen, seconds, counts). With `pace`,
    `pace` articles at a time, each slice once the one before is decided (a live stream the workers keep up
    with); without, the whole file at once (a backlog, partitions read at their own speeds)."""
    ids = {json.loads(line)["id"] for line in lines}
    step = pace or len(lines)
    timeout = 600 if pace else 3600
    with DevStack(partitions=partitions) as stack:
        started_workers = [stack.start_worker(env) for _ in range(workers)]
        for worker in started_workers:
            stack.wait_logged(worker, "partitions_assigned")
        started = time.perf_counter()
        for begin in range(0, len(lines), step):
            part = lines[begin:begin + step]
            stack.produce(part, keys=[(json.loads(line).get("url") or "").encode() or None for line in part])
            sent = {json.loads(line)["id"] for line in lines[:begin + step]}
            events, _ = stack.wait_accounted(sent, dead=0, timeout=timeout)
            missing = sent - {e["article"]["id"] for e in events if e.get("article")}
            if missing:
                status = {w.name: w.process.poll() for w in started_workers}
                raise RuntimeError(f"{len(missing)} articles had no event after {timeout} s (worker exit codes, "
                                   f"None = running: {status}; logs in {stack.workdir})")
        seconds = time.perf_counter() - started
    stories: dict[str, set[str]] = {}
    for event in events:
        if event.get("article"):
            stories.setdefault(event["article"]["id"], set()).add(event["story_id"])
    counts = {"events": len(events), "articles_without_event": len(ids - stories.keys()),
              "articles_in_two_stories": sum(len(s) > 1 for s in stories.values())}
    return [{"id": i, "story_id": min(s)} for i, s in stories.items()], seconds, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", choices=STORY_SETS, default=STORY_SETS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--pace", type=int, help="produce this many articles at a time, each slice once the one before "
                    "is decided (default: the whole set at once, as a backlog)")
    ap.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE", help="worker settings, e.g. "
                    "SW_MAX_PARTITION_FETCH_BYTES=262144")
    ap.add_argument("--stream-only", action="store_true", help="leave out the batch-mode run")
    ap.add_argument("--batch-orders", type=int, default=0, metavar="N",
                    help="also run batch mode over N random orders of each set (order alone, without a stream)")
    a = ap.parse_args()
    env = dict(pair.split("=", 1) for pair in a.env)
    if not (SHARED / "data").is_dir():
        print(f"labelled data not found at {SHARED / 'data'}: nothing to measure", file=sys.stderr)
        return 2
    sys.path.insert(0, str(SHARED / "tools"))
    from score import read_jsonl, score_stories

    summary = {}
    with tempfile.TemporaryDirectory(prefix="stream-quality-") as scratch:
        for name in a.sets:
            path = SHARED / "data" / SETS[name]
            gold = read_jsonl(str(path))
            lines = [line.encode() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            runs = {} if a.stream_only else {"batch": batch_decisions(path, Path(scratch), env)}
            decisions, seconds, counts = stream_decisions(lines, a.workers, a.partitions, a.pace, env)
            runs["stream"] = (decisions, seconds)
            result = {"articles": len(lines), **counts}
            for mode, (decisions, seconds) in runs.items():
                scores = score_stories(gold, decisions)
                result[mode] = {key: scores[key] for key in FIGURES}
                result[mode]["articles_per_s"] = round(len(lines) / seconds, 1)
            if "batch" in result:
                result["stream_over_batch_bcubed_f1"] = round(result["stream"]["bcubed_f1"]
                                                             / result["batch"]["bcubed_f1"], 3)
                # the two runs' stories against each other: batch mode's taken as the gold
                agreement = score_stories(as_gold(runs["batch"][0]), runs["stream"][0])
                result["stream_vs_batch"] = {key: agreement[key] for key in ("bcubed_f1", "pairwise_f1")}
            if a.batch_orders:
                result["batch_shuffled_bcubed_f1"] = shuffled_batch_scores(path, lines, a.batch_orders, Path(scratch),
                                                                           env, gold, score_stories)
            summary[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
    print(json.dumps({"workers": a.workers, "partitions": a.partitions, "pace": a.pace, "env": env, "sets": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the lead embedder's thread budget: leads/s at the CPUs this process may use, at one thread, and
oversubscribed (four times the budget, which is what onnxruntime's default of every physical core amounts to
in a container whose CPU limit is a fraction of a large node).

    python bench/bench_embedding.py                 # 256 leads (synthetic, or --input JSON Lines), 3 rounds

Rounds alternate the three embedders, and the median of each is reported, which cancels most of the drift of
a shared machine; the ratios to the budget's speed are the figures to compare.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loky import cpu_count  # noqa: E402

from worker.core.embedding import Embedder, lead_of  # noqa: E402

WORDS = ("police fire council storm court minister shooting flood vote market river school hospital bridge "
         "election strike company judge report officers county state city north south injured charged").split()


def _leads(path: Path | None, count: int) -> list[str]:
    """Leads of the first `count` articles of a JSON Lines file, or invented ones (200-400 words each)."""
    if path:
        with path.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for _, line in zip(range(count), fh)]
        return [lead_of(r.get("title"), r.get("text")) for r in rows]
    rng = random.Random(7)
    return [lead_of(" ".join(rng.choices(WORDS, k=8)), " ".join(rng.choices(WORDS, k=rng.randint(200, 400))))
            for _ in range(count)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="JSON Lines articles (title, text); default: synthetic leads")
    ap.add_argument("--leads", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    leads = _leads(args.input, args.leads)
    budget = cpu_count()
    embedders = {f"budget ({budget})": Embedder(), "1 thread": Embedder(threads=1),
                 f"oversubscribed ({4 * budget})": Embedder(threads=4 * budget)}
    speeds: dict[str, list[float]] = {name: [] for name in embedders}
    for embedder in embedders.values():
        embedder.embed(leads[:16])  # first-run allocations out of the timing
    for _ in range(args.rounds):
        for name, embedder in embedders.items():
            start = time.perf_counter()
            embedder.embed(leads)
            speeds[name].append(len(leads) / (time.perf_counter() - start))
    base = statistics.median(speeds[f"budget ({budget})"])
    print(f"lead embeddings, {len(leads)} leads, median of {args.rounds} rounds (CPUs this process may use: {budget})")
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"  {name:<22} {median:8.1f} leads/s   {median / base:5.2f}x the budget's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

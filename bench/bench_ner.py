"""Benchmark of NER cost against text length: characters/s for articles of 5,000, 25,000 and 100,000 characters
(the longest a field is tagged), and the ratio of each to the shortest.

    python bench/bench_ner.py                       # invented prose full of names, 3 rounds

NER time should grow linearly with the text (a ratio near 1.0x): a cost per entity that also grows with the
text made one 100,000-character article take 20 s to tag, long enough for the liveness probe to restart the
worker on a batch of them. Rounds alternate the lengths and the median is reported.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.core.entities import EntityExtractor  # noqa: E402

NAMES = ("Maria Lopez", "John Carter", "Chicago", "the Red Cross", "Texas", "Acme Corp", "Paris", "Ahmed Khan",
         "the United Nations", "Lake Michigan", "Dr. Susan Park", "Ohio State University")
WORDS = ("police said the council met on the report about the storm and the court heard that officers were "
         "called to the scene where residents gathered after the vote").split()


def prose(chars: int, rng: random.Random) -> str:
    """Sentences of filler words with a name in each, `chars` characters long."""
    out, size = [], 0
    while size < chars:
        sentence = f"{rng.choice(NAMES)} {' '.join(rng.choices(WORDS, k=14))}. "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(11)
    lengths = (5_000, 25_000, 100_000)
    texts = {n: prose(n, rng) for n in lengths}
    extractor = EntityExtractor()
    extractor.extract([("Warm-up", texts[5_000])])
    speed: dict[int, list[float]] = {n: [] for n in lengths}
    entities: dict[int, int] = {}
    for _ in range(a.rounds):
        for n in lengths:
            started = time.perf_counter()
            (found,) = extractor.extract([("", texts[n])])
            speed[n].append(n / (time.perf_counter() - started))
            entities[n] = len(found)
    base = statistics.median(speed[lengths[0]])
    print(f"{'chars':>8} {'entities':>9} {'chars/s':>10} {'vs 5k':>7}")
    for n in lengths:
        median = statistics.median(speed[n])
        print(f"{n:>8} {entities[n]:>9} {median:>10.0f} {median / base:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

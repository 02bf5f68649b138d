"""Duplicate-detection precision and recall per kind of pair on ../shared/data/near_duplicates.

Scores batch-mode decisions with ../shared/tools/score.py's pair scorer, once over all pairs and once per `kind`
(tracking_url, other_outlet+boilerplate, sibling_event, ...). A kind holds only positive or only negative pairs,
so per kind `correct` (the share decided right) says more than P or R. Also reports the kinds of
duplicate the worker named for the positive pairs it linked.

    story-worker batch --input ../shared/data/near_duplicates/articles.jsonl --output /tmp/nd.jsonl
    python bench/dedup_quality_by_kind.py /tmp/nd.jsonl
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("decisions", help="batch-mode output for near_duplicates/articles.jsonl")
    ap.add_argument("--gold", default=str(SHARED / "data" / "near_duplicates" / "pairs.jsonl"))
    a = ap.parse_args()
    if not (SHARED / "tools" / "score.py").is_file():
        print(f"the scorer is not at {SHARED / 'tools'} (clone with ../shared beside the repo)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(SHARED / "tools"))
    from score import read_jsonl, score_pairs

    gold, pred = read_jsonl(a.gold), read_jsonl(a.decisions)
    decided = {r["id"] for r in pred}
    missing = {i for row in gold for i in (row["a"], row["b"])} - decided
    if missing:
        print(f"{len(missing)} articles of the pairs have no decision line: score a whole run", file=sys.stderr)
        return 1
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for row in gold:
        by_kind[row.get("kind", "?")].append(row)
    print(f"{'kind':42} {'pairs':>5} {'label':>5} {'tp':>4} {'fp':>4} {'fn':>4} {'P':>6} {'R':>6} {'correct':>7}")
    for kind in ["ALL"] + sorted(by_kind):
        rows = gold if kind == "ALL" else by_kind[kind]
        s = score_pairs(rows, pred)
        label = "mixed" if kind == "ALL" else str(rows[0]["label"])
        print(f"{kind:42} {len(rows):5} {label:>5} {s['tp']:4} {s['fp']:4} {s['fn']:4} "
              f"{s['precision']:6.3f} {s['recall']:6.3f} {(s['tp'] + s['tn']) / len(rows):7.3f}")
    named = {r["id"]: r.get("duplicate_kind") for r in pred}
    kinds = Counter(named.get(row["b"]) or named.get(row["a"]) for row in gold if row["label"])
    print("duplicate_kind named on positive pairs:", dict(kinds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Why a story-clustering figure falls short: every decision of the batch run, sorted into right and wrong.

Runs the shipped configuration over the labelled story sets (as bench/ablate_cluster.py does, with its cache
of NER and lead embeddings) and reads each decision against the gold stories of the articles before it:

- a join is right when the joined story already holds an article of the same gold story, else it is a
  *seed error*: the first report of one event filed under another, which every later report of that event
  then follows;
- a new story is right when no earlier article of its gold story exists, else a join was missed.

It prints the counts by the size of the story joined, then whether any threshold on the join score could
reject the seed errors: for each seed error of a set, how many right joins (of every set, into stories of the
same size or smaller) score no higher. A threshold that rejects the error rejects those too.

    python bench/join_errors.py [--sets ecbplus_story_clusters ...] [--cache .cache/ablate]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ablate_cluster import SETS, SHARED, measuring_setup  # noqa: E402
from worker.batch import run_batch  # noqa: E402

STORY_SETS = [s for s in SETS if s != "seeds"]


def classify(gold: list[dict], decisions: list[dict]) -> list[dict]:
    """One row per clustering decision (duplicates, updates and errors left out), in input order."""
    gold_of = {g["id"]: g["story_id"] for g in gold}
    members: dict[str, list[str]] = defaultdict(list)   # predicted story -> gold stories of its members
    seen: set[str] = set()                                # gold stories with an article before this one
    rows = []
    for d in decisions:
        if d.get("error") or d.get("duplicate_of") or d.get("update_of"):
            continue
        story, truth = d["story_id"], gold_of[d["id"]]
        if members[story]:
            size = len(members[story])
            kind = "join_right" if truth in members[story] else "seed_error"
        else:
            size = 0
            kind = "missed_join" if truth in seen else "new_right"
        rows.append({"id": d["id"], "kind": kind, "size": size, "score": d.get("story_score"), "gold": truth,
                     "story_golds": dict(Counter(members[story]))})
        members[story].append(truth)
        seen.add(truth)
    return rows


def _size_band(size: int) -> str:
    return "1" if size == 1 else "2-4" if size <= 4 else "5+"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", choices=STORY_SETS, default=STORY_SETS)
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "ablate"))
    a = ap.parse_args()
    setup = measuring_setup(a.cache)
    if setup is None:
        return 2
    settings, client, entities, embeddings = setup
    from score import read_jsonl

    rows_of = {}
    with tempfile.TemporaryDirectory(prefix="join-errors-") as tmp:
        for set_name in a.sets:
            src = SHARED / "data" / SETS[set_name]
            out = Path(tmp) / f"{set_name}.jsonl"
            run_batch(settings, client, src, out, extractor=SimpleNamespace(extract=entities),
                      embedder=SimpleNamespace(embed=embeddings))
            entities.save()
            embeddings.save()
            rows_of[set_name] = classify(read_jsonl(str(src)), read_jsonl(str(out)))

    print("decisions by kind, and joins by the size of the story joined (articles before the join)")
    for set_name, rows in rows_of.items():
        kinds = Counter(r["kind"] for r in rows)
        bands = {k: Counter(_size_band(r["size"]) for r in rows if r["kind"] == k)
                 for k in ("join_right", "seed_error")}
        print(f"  {set_name:26} {json.dumps(dict(sorted(kinds.items())))}  right joins by size "
              f"{json.dumps(dict(sorted(bands['join_right'].items())))}, seed errors by size "
              f"{json.dumps(dict(sorted(bands['seed_error'].items())))}")

    print("seed errors, and the right joins a threshold rejecting each would reject too "
          "(into stories of the same size or smaller, per set)")
    for set_name, rows in rows_of.items():
        errors = [r for r in rows if r["kind"] == "seed_error"]
        print(f"  {set_name}: {len(errors)} seed errors")
        for r in sorted(errors, key=lambda r: -r["score"])[:12]:
            below = Counter(rows_set for rows_set, rows2 in rows_of.items() for j in rows2
                            if j["kind"] == "join_right" and j["size"] <= r["size"] and j["score"] <= r["score"])
            print(f"    {r['id']:34} score {r['score']:.3f} into a story of {r['size']} ({r['story_golds']}), "
                  f"gold {r['gold']}; right joins scoring no higher: {dict(below)}")
    print(f"  right joins in all: {dict((s, sum(r['kind'] == 'join_right' for r in rows)) for s, rows in rows_of.items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

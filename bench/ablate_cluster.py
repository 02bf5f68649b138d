"""Story-clustering quality with each signal switched off in turn, on the labelled story sets in ../shared/data.

Runs the real batch path (validation, dedup, clustering on Redis) with one `ClusterConfig` variant at a time and
scores the decisions with ../shared/tools/score.py (pairwise and BCubed P/R/F1, stories predicted vs gold).
NER and lead embeddings do not depend on the configuration, so they are computed once per article and cached
in `.cache/ablate/`, in files named by a hash of the code that produces them (entity canonicalisation and text
normalisation included: a cache written by other code is not read); every variant then costs only the clustering.

    python bench/ablate_cluster.py                       # every variant on every set
    python bench/ablate_cluster.py --variants full no_years --sets ecbplus_story_clusters

Redis: REDIS_URL (default redis://127.0.0.1:6379/0), under a throw-away namespace per run.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pickle
import sys
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from worker.batch import run_batch  # noqa: E402
from worker.core.cluster import ClusterConfig  # noqa: E402
from worker.core.embedding import Embedder  # noqa: E402
from worker.core.entities import EntityExtractor  # noqa: E402
from worker.settings import Settings  # noqa: E402

SETS = {
    "seeds": "seeds/articles.jsonl",
    "gva_incident_clusters": "gva_incident_clusters/dev.jsonl",
    "ecbplus_story_clusters": "ecbplus_story_clusters/dev.jsonl",
    "uci_news_aggregator_head": "uci_news_aggregator_head/dev.jsonl",
}

BASE = ClusterConfig()
VARIANTS = {
    "full": BASE,
    "no_entities": dataclasses.replace(BASE, entity_weight=0.0),
    "no_text": dataclasses.replace(BASE, text_weight=0.0),
    "no_embedding": dataclasses.replace(BASE, embed_weight=0.0),
    "no_time": dataclasses.replace(BASE, time_weight=0.0),
    "no_years": dataclasses.replace(BASE, year_penalty=0.0),
    "no_numbers": dataclasses.replace(BASE, number_penalty=0.0),
    "no_centring": dataclasses.replace(BASE, embed_center=False),
    "no_headline_names": dataclasses.replace(BASE, headline_names=False),
    "no_people_bridge": dataclasses.replace(BASE, people_bridge_time=False),
}


class DiskMemo:
    """A batched model call memoised in a pickle on disk: the same input gives the same output."""

    def __init__(self, path: Path, build):
        self.path, self._build, self._call = path, build, None
        self.data = pickle.loads(path.read_bytes()) if path.exists() else {}
        self.dirty = False

    def __call__(self, inputs):
        missing = [x for x in dict.fromkeys(inputs) if x not in self.data]
        if missing:
            self._call = self._call or self._build()
            self.data.update(zip(missing, self._call(missing)))
            self.dirty = True
        return [self.data[x] for x in inputs]

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(pickle.dumps(self.data))
            self.dirty = False


def measuring_setup(cache: str) -> tuple[Settings, object, DiskMemo, DiskMemo] | None:
    """Settings, a Redis client (REDIS_URL) and the disk-memoised NER and lead embedder in `cache`, with
    ../shared/tools importable (its `score`); None, said on stderr, when the labelled data is absent."""
    from worker.cli import _redis

    if not (SHARED / "data").is_dir():
        print(f"labelled data not found at {SHARED / 'data'}: nothing to measure", file=sys.stderr)
        return None
    sys.path.insert(0, str(SHARED / "tools"))
    settings = Settings()
    entities = Path(cache) / f"entities-{_code_stamp('entities.py', 'normalize.py')}.pkl"
    embeddings = Path(cache) / f"embeddings-{_code_stamp('embedding.py')}.pkl"
    return (settings, _redis(settings), DiskMemo(entities, lambda: EntityExtractor().extract),
            DiskMemo(embeddings, lambda: Embedder().embed))


def _code_stamp(*core_modules: str) -> str:
    """A short hash of the worker/core modules whose code decides a cached output."""
    digest = hashlib.sha256()
    for name in core_modules:
        digest.update((ROOT / "worker" / "core" / name).read_bytes())
    return digest.hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "ablate"))
    a = ap.parse_args()
    setup = measuring_setup(a.cache)
    if setup is None:
        return 2
    settings, client, entities, embeddings = setup
    extractor, embedder = SimpleNamespace(extract=entities), SimpleNamespace(embed=embeddings)
    work = Path(tempfile.mkdtemp(prefix="ablate-"))
    try:
        print(json.dumps(_measure(a, work, settings, client, entities, embeddings, extractor, embedder)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _measure(a, work: Path, settings, client, entities, embeddings, extractor, embedder) -> dict:
    """Each variant over each set, a line per run; the scores by set and variant."""
    from score import read_jsonl, score_stories

    print(f"{'set':26} {'variant':14} {'bc_P':>6} {'bc_R':>6} {'bc_F1':>6} {'pw_P':>6} {'pw_R':>6} {'pw_F1':>6} "
          f"{'pred/gold':>10} {'s':>6}")
    summary = {}
    for set_name in a.sets:
        src = SHARED / "data" / SETS[set_name]
        gold = read_jsonl(str(src))
        for variant in a.variants:
            out = work / f"{set_name}.{variant}.jsonl"
            started = time.perf_counter()
            run_batch(settings, client, src, out, extractor=extractor, cluster_config=VARIANTS[variant],
                      embedder=embedder)
            secs = time.perf_counter() - started
            entities.save()
            embeddings.save()
            pred = read_jsonl(str(out))
            if set_name == "seeds":
                by = {r["id"]: r for r in pred}
                res = {"one_story": len({r["story_id"] for r in pred}) == 1,
                       "rewrite_linked": any(r.get("duplicate_of") in by for r in pred)}
                print(f"{set_name:26} {variant:14} {json.dumps(res)}")
            else:
                res = score_stories(gold, pred)
                print(f"{set_name:26} {variant:14} {res['bcubed_precision']:6.3f} {res['bcubed_recall']:6.3f} "
                      f"{res['bcubed_f1']:6.3f} {res['pairwise_precision']:6.3f} {res['pairwise_recall']:6.3f} "
                      f"{res['pairwise_f1']:6.3f} {res['pred_stories']:>4}/{res['gold_stories']:<5} {secs:6.1f}")
            sys.stdout.flush()
            summary.setdefault(set_name, {})[variant] = res
    return summary


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the dedup stage on synthetic articles, with datasketch MinHashLSH on Redis for comparison.

Prints, from one run: articles/s, Redis bytes per article (used_memory delta), the per-article cost of a
probe batch at a small and at the full index size, and the same figures for datasketch.

    python bench/bench_dedup.py                 # small default, well under two minutes
    python bench/bench_dedup.py --articles 1000000 --datasketch-articles 100000
"""
from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from urllib.parse import urlsplit

import redis

from worker.adapters.dedup_index import DedupIndex
from worker.core.dedup import DedupInput
from worker.core.normalize import normalize_text, words

SYLLABLES = ["ka", "lo", "mir", "ten", "sa", "vu", "rin", "do", "pel", "an", "cor", "es", "ti", "nu", "bra", "el"]


class Articles:
    """Reproducible news-like articles from invented words; every fifth one is a copy of a recent article."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.vocab = ["".join(self.rng.choices(SYLLABLES, k=self.rng.randint(1, 4))) for _ in range(20000)]
        self.weights = [1 / (rank + 1) for rank in range(len(self.vocab))]
        self.recent: list[DedupInput] = []

    def make(self, n: int, start: int) -> list[DedupInput]:
        out = []
        for i in range(start, start + n):
            t = 1_600_000_000 + i * 2.0
            if self.recent and self.rng.random() < 0.2:
                src = self.rng.choice(self.recent)
                body = "Wire report. " + src.text[: int(len(src.text) * self.rng.uniform(0.6, 1.0))]
                out.append(DedupInput(f"c{i}", f"https://copy{i % 50}.example/{i}", src.title, body, "copy", t))
                continue
            sentences = [" ".join(self.rng.choices(self.vocab, self.weights, k=self.rng.randint(8, 25)))
                         for _ in range(self.rng.randint(8, 20))]
            art = DedupInput(f"a{i}", f"https://site{i % 200}.example/{i}", sentences[0], ". ".join(sentences),
                             "site", t)
            self.recent = (self.recent + [art])[-500:]
            out.append(art)
        return out


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def run_dedup(client, articles, probe, small, batch):
    index = DedupIndex(client, "bench-" + uuid.uuid4().hex, None, 30 * 86400)
    try:
        before = used_memory(client)
        t0 = time.perf_counter()
        probe_small = None
        for i in range(0, len(articles), batch):
            if i == small:
                probe_small = _timed_probe(index, probe, batch)
            index.check_and_insert(articles[i:i + batch])
        elapsed = time.perf_counter() - t0
        bytes_per_article = (used_memory(client) - before) / len(articles)
        probe_full = _timed_probe(index, probe, batch)
        return len(articles) / elapsed, bytes_per_article, probe_small, probe_full
    finally:
        index.drop()


def _timed_probe(index, probe, batch):
    """Per-article seconds to decide the probe articles (already indexed: the redelivery path) plus new ones."""
    fresh = [DedupInput(p.article_id + f"-probe{uuid.uuid4().hex[:6]}", p.canonical_url + "/p", p.title, p.text,
                        p.source, p.event_time) for p in probe]
    t0 = time.perf_counter()
    for i in range(0, len(fresh), batch):
        index.check_and_insert(fresh[i:i + batch])
    return (time.perf_counter() - t0) / len(fresh)


def run_datasketch(client, articles, url):
    from datasketch import MinHash, MinHashLSH

    parts = urlsplit(url)
    basename = ("bench-ds-" + uuid.uuid4().hex).encode()
    lsh = MinHashLSH(threshold=0.5, num_perm=128, storage_config={
        "type": "redis", "basename": basename, "redis": {"host": parts.hostname, "port": parts.port or 6379}})
    before = used_memory(client)
    t0 = time.perf_counter()
    for art in articles:
        tokens = words(normalize_text(art.text))
        mh = MinHash(num_perm=128)
        mh.update_batch([" ".join(tokens[i:i + 3]).encode() for i in range(max(1, len(tokens) - 2))])
        if not lsh.query(mh):
            lsh.insert(art.article_id, mh)
    elapsed = time.perf_counter() - t0
    bytes_per_article = (used_memory(client) - before) / len(articles)
    for key in client.scan_iter(match=basename + b"*", count=1000):
        client.unlink(key)
    return len(articles) / elapsed, bytes_per_article


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--articles", type=int, default=8000)
    ap.add_argument("--small", type=int, default=1024, help="index size for the small-index probe")
    ap.add_argument("--probe", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--datasketch-articles", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    gen = Articles(a.seed)
    articles = gen.make(a.articles, 0)
    probe = gen.make(a.probe, a.articles)

    rate, per_article, small, full = run_dedup(client, articles, probe, a.small - a.small % a.batch, a.batch)
    print(f"dedup: {a.articles} articles, {rate:,.0f} articles/s, {per_article:,.0f} bytes/article")
    print(f"dedup: probe cost {small * 1e6:,.0f} us/article at {a.small} indexed, {full * 1e6:,.0f} us/article "
          f"at {a.articles} indexed, ratio {full / small:.2f}")
    n = min(a.datasketch_articles, a.articles)
    ds_rate, ds_bytes = run_datasketch(client, articles[:n], url)
    print(f"datasketch MinHashLSH (redis storage, 128 perm): {n} articles, {ds_rate:,.0f} articles/s, "
          f"{ds_bytes:,.0f} bytes/article")
    print(f"ratios: speed dedup/datasketch {rate / ds_rate:.1f}x, memory dedup/datasketch {per_article / ds_bytes:.2f}")


if __name__ == "__main__":
    main()

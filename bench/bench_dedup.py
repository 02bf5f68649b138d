"""Benchmark of the dedup stage on synthetic articles, with datasketch MinHashLSH on Redis for comparison.

Prints, from one run: articles/s of `DedupIndex.check_and_insert` (wall clock, plus the client's CPU time and
the Redis server's script time per article), Redis bytes per article (`used_memory` before/after indexing,
every key of the namespace included), the per-article cost of probe batches against a small and a large
index (the ratio of the two), and the same speed and memory figures for datasketch MinHashLSH with Redis
storage on the same articles.

    python bench/bench_dedup.py              # small default: 8,000 articles, well under two minutes
    python bench/bench_dedup.py --scale      # 1,000,000 indexed (bytes/article at 100k; the rest short),
                                             # probes at 10k vs 1M, datasketch on 20,000 articles

By default the benchmark starts its own `redis-server` on a free port (so `used_memory` counts nothing but
the benchmark) and stops it afterwards; `--redis-url` uses a running server instead.

Articles: invented words in Zipf frequencies, 300-600 words, a third of the originals ending with their
site's footer (boilerplate shared by many articles), a fifth of the stream copies of a recent original
(verbatim, truncated, with a dateline and a footer, or with a few words changed); event times 2 s apart, so
at 1M the whole index (23 days) is inside the 30-day window and is searched by every probe. The large index
is filled through the same public API, `check_and_insert`, in batches of `--fill-batch` (1024) articles;
with --scale the articles beyond the memory measurement are short (40-80 words, `--fill-words`), which keeps
the fill within minutes and still indexes every one of them (record, URL, content key, up to 8 anchors).
The small index spreads its articles over the same stretch of event time (fewer per hour), so both indexes
span the same generations and the comparison isolates what the number of articles indexed costs.
Probes: batches of fresh articles (their own originals and copies of them, identical for both indexes),
alternated batch by batch between the small and the large index over several rounds; the median per-article
cost of each is reported, which cancels most of the drift of a shared machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import numpy as np
import redis

from worker.adapters.dedup_index import DedupIndex
from worker.core.dedup import DedupInput

SYLLABLES = ["ka", "lo", "mir", "ten", "sa", "vu", "rin", "do", "pel", "an", "cor", "es", "ti", "nu", "bra", "el",
             "gor", "fa", "li", "ost"]
WINDOW = 30 * 86400
T0 = 1_600_000_000.0


class Articles:
    """Reproducible news-like articles (see the module docstring); `make` continues the stream."""

    def __init__(self, seed: int, copy_rate: float = 0.2, vocab_size: int = 30000, sites: int = 200,
                 prefix: str = "", stream_seed: int | None = None, spacing: float = 2.0):
        self.spacing = spacing
        self.rng = np.random.default_rng(seed)
        self.copy_rate = copy_rate
        self.prefix = prefix
        lens = self.rng.integers(1, 5, vocab_size)
        syl = self.rng.integers(0, len(SYLLABLES), (vocab_size, 4))
        self.vocab = sorted({"".join(SYLLABLES[s] for s in syl[i, :lens[i]]) + str(i % 7 or "")
                             for i in range(vocab_size)})
        weights = 1.0 / np.arange(1, len(self.vocab) + 1)
        self.cdf = np.cumsum(weights / weights.sum())
        self.footers = [self._text(int(self.rng.integers(15, 40))) for _ in range(sites)]
        self.sites = sites
        self.recent: list[DedupInput] = []
        if stream_seed is not None:      # same vocabulary and footers, another stream
            self.rng = np.random.default_rng(stream_seed)

    def _text(self, n: int) -> str:
        idx = np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.vocab) - 1).tolist()
        cuts = np.cumsum(self.rng.integers(8, 26, n // 8 + 2)).tolist()
        out, start = [], 0
        for c in cuts:
            if start >= n:
                break
            chunk = [self.vocab[i] for i in idx[start:c]]
            chunk[0] = chunk[0].capitalize()
            out.append(" ".join(chunk) + ".")
            start = c
        return " ".join(out)

    def make(self, n: int, start: int, words: tuple[int, int] = (300, 600)) -> list[DedupInput]:
        out = []
        rng = self.rng
        for i in range(start, start + n):
            t = T0 + i * self.spacing
            if self.recent and rng.random() < self.copy_rate:
                src = self.recent[int(rng.integers(len(self.recent)))]
                text, how = src.text, int(rng.integers(4))
                if how == 1:
                    text = text[: int(len(text) * rng.uniform(0.5, 0.95))]
                elif how == 2:
                    text = "LONDON (Wire) - " + text + " " + self.footers[i % self.sites]
                elif how == 3:
                    w = text.split(" ")
                    for j in rng.integers(0, len(w), max(1, len(w) // 40)).tolist():
                        w[j] = self.vocab[int(rng.integers(len(self.vocab)))]
                    text = " ".join(w)
                out.append(DedupInput(f"{self.prefix}c{i}", f"https://copy{i % 50}.example/{self.prefix}{i}",
                                      src.title, text, t))
                continue
            site = int(rng.integers(self.sites))
            body = self._text(int(rng.integers(words[0], words[1] + 1)))
            if rng.random() < 0.33:
                body += " " + self.footers[site]
            art = DedupInput(f"{self.prefix}a{i}", f"https://site{site}.example/{self.prefix}{i}",
                             " ".join(body.split(" ", 9)[:8]), body, t)
            self.recent.append(art)
            if len(self.recent) > 2000:
                self.recent = self.recent[-1000:]
            out.append(art)
        return out


def used_memory(client: redis.Redis) -> int:
    """Bytes the server holds, once what an UNLINK left to free in the background is freed."""
    for _ in range(200):
        info = client.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)):
            break
        time.sleep(0.05)
    return int(info["used_memory"])


def script_usec(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(k, {}).get("usec", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))


class Indexer:
    """Feeds a stream into one DedupIndex and keeps wall, client CPU and server script time."""

    def __init__(self, client, gen: Articles, batch: int):
        self.client, self.gen, self.batch = client, gen, batch
        self.index = DedupIndex(client, "bench-" + uuid.uuid4().hex, None, WINDOW)
        self.count = 0

    def feed(self, n: int, batch: int | None = None, words: tuple[int, int] = (300, 600)) -> dict:
        batch = batch or self.batch
        wall = cpu = server = 0.0
        kinds: dict = {}
        done = 0
        while done < n:
            chunk = self.gen.make(min(20 * batch, n - done), self.count, words)
            s0, c0, w0 = script_usec(self.client), time.process_time(), time.perf_counter()
            for i in range(0, len(chunk), batch):
                for o in self.index.check_and_insert(chunk[i:i + batch]):
                    kinds[o.kind] = kinds.get(o.kind, 0) + 1
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            server += (script_usec(self.client) - s0) / 1e6
            self.count += len(chunk)
            done += len(chunk)
        return {"n": n, "rate": n / wall, "wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6,
                "server_us": server / n * 1e6, "kinds": kinds}


def probe(client, indexes: list[DedupIndex], items: list[DedupInput], batch: int) -> list[tuple[float, float, float]]:
    """Per index, the per-article wall time, client CPU time and Redis script time of deciding `items`; the
    indexes take turns batch by batch, so a shared machine's drift weighs on all of them alike."""
    totals = [[0.0, 0.0, 0.0] for _ in indexes]
    for i in range(0, len(items), batch):
        for index, total in zip(indexes, totals):
            s0, c0, t0 = script_usec(client), time.process_time(), time.perf_counter()
            index.check_and_insert(items[i:i + batch])
            total[0] += time.perf_counter() - t0
            total[1] += time.process_time() - c0
            total[2] += (script_usec(client) - s0) / 1e6
    return [(wall / len(items), cpu / len(items), server / len(items)) for wall, cpu, server in totals]


def probe_sets(rounds: int, size: int, start: int, seed: int) -> list[list[DedupInput]]:
    gen = Articles(seed, prefix="p", stream_seed=seed + 1)
    return [gen.make(size, start + r * size) for r in range(rounds)]


def run_datasketch(client, articles, url) -> tuple[float, float, float]:
    """datasketch MinHashLSH over the articles with Redis storage (articles/s, bytes/article), and in memory
    (articles/s): its Redis storage makes a round trip per band for each query and insert, so the two rates
    tell its computation from its round trips."""
    from datasketch import MinHash, MinHashLSH

    from worker.core.normalize import normalize_text, words

    def run(lsh) -> float:
        t0 = time.perf_counter()
        for art in articles:
            tokens = words(normalize_text(art.text))
            mh = MinHash(num_perm=128)
            mh.update_batch([" ".join(tokens[i:i + 3]).encode() for i in range(max(1, len(tokens) - 2))])
            if not lsh.query(mh):
                lsh.insert(art.article_id, mh)
        return len(articles) / (time.perf_counter() - t0)

    parts = urlsplit(url)
    basename = ("bench-ds-" + uuid.uuid4().hex).encode()
    before = used_memory(client)
    rate = run(MinHashLSH(threshold=0.5, num_perm=128, storage_config={
        "type": "redis", "basename": basename, "redis": {"host": parts.hostname, "port": parts.port or 6379}}))
    bytes_per_article = (used_memory(client) - before) / len(articles)
    for key in client.scan_iter(match=basename + b"*", count=1000):
        client.unlink(key)
    return rate, bytes_per_article, run(MinHashLSH(threshold=0.5, num_perm=128))


def start_redis() -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-dedup-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, url, workdir


def line(label: str, r: dict) -> str:
    return (f"{label}: {r['n']:,} articles, {r['rate']:,.0f} articles/s wall ({r['wall_us']:,.0f} us/article: "
            f"client CPU {r['cpu_us']:,.0f} us, Redis scripts {r['server_us']:,.0f} us), kinds {r['kinds']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", action="store_true", help="1M indexed, memory at 100k and 1M, datasketch on 20k")
    ap.add_argument("--articles", type=int, help="articles in the large index (default 8,000; 1,000,000 with --scale)")
    ap.add_argument("--memory-at", type=int, help="also report bytes/article at this index size (100,000 with --scale)")
    ap.add_argument("--small", type=int, help="size of the small index (default 1,000; 10,000 with --scale)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fill-batch", type=int, default=1024, help="batch size used to fill the large index")
    ap.add_argument("--fill-words", default="300:600",
                    help="article length (words, min:max) of the articles filling the large index beyond the "
                         "memory measurement (--scale: 40:80, to reach 1M in minutes)")
    ap.add_argument("--probe", type=int, default=512, help="articles per probe round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--datasketch-articles", type=int, help="default 1,500; 20,000 with --scale")
    ap.add_argument("--redis-url", help="use this Redis instead of starting one")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))      # clean up (namespaces, own Redis) when stopped
    big = a.articles or (1_000_000 if a.scale else 8_000)
    memory_at = a.memory_at or (100_000 if a.scale else 0)
    small_n = a.small or (10_000 if a.scale else 1_000)
    ds_n = min(a.datasketch_articles or (20_000 if a.scale else 1_500), big)
    fill_words = tuple(int(x) for x in (("40:80" if a.scale and a.fill_words == "300:600" else a.fill_words)
                                         .split(":")))

    proc = workdir = None
    url = a.redis_url
    if url is None and shutil.which("redis-server"):
        proc, url, workdir = start_redis()
    url = url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    small = large = None
    try:
        print(f"redis {url} ({'own server' if proc else 'shared server'}); batch {a.batch}, window 30 days")
        # 1. throughput and memory on the first articles of the large index, at the benchmark batch size
        large = Indexer(client, Articles(a.seed), a.batch)
        first = min(big, max(memory_at, 8_000))
        before = used_memory(client)
        r = large.feed(first)
        print(line("dedup indexing", r))
        print(f"dedup memory: {(used_memory(client) - before) / first:,.0f} bytes/article at {first:,} indexed")
        # 2. the rest of the large index, filled in big batches through the same API
        if big > first:
            r = large.feed(big - first, a.fill_batch, fill_words)
            print(line(f"dedup fill (batches of {a.fill_batch}, {fill_words[0]}-{fill_words[1]} words)", r))
            print(f"dedup memory: {(used_memory(client) - before) / big:,.0f} bytes/article at {big:,} indexed")
        # 3. the small index, then probes alternated between both
        small = Indexer(client, Articles(a.seed, spacing=2.0 * big / small_n), a.batch)
        small.feed(small_n)
        sets = probe_sets(a.rounds, a.probe, big + 1000, a.seed)
        costs_small, costs_large = [], []
        for items in sets:
            cost_small, cost_large = probe(client, [small.index, large.index], items, a.batch)
            costs_small.append(cost_small)
            costs_large.append(cost_large)
        (cs, cs_cpu, cs_srv), (cl, cl_cpu, cl_srv) = ([statistics.median(c[k] for c in costs) for k in range(3)]
                                                      for costs in (costs_small, costs_large))
        grown = a.rounds * a.probe  # the probes are indexed too
        print(f"dedup probe cost (median of {a.rounds} rounds of {a.probe}): {cs * 1e6:,.0f} us/article at "
              f"{small_n:,}-{small_n + grown:,} indexed, {cl * 1e6:,.0f} us/article at {big:,}-{big + grown:,} "
              f"indexed, ratio {cl / cs:.2f}x "
              f"(client CPU {cs_cpu * 1e6:,.0f} -> {cl_cpu * 1e6:,.0f} us, Redis scripts {cs_srv * 1e6:,.0f} -> "
              f"{cl_srv * 1e6:,.0f} us)")
        small.index.drop()
        small = None
        # 4. datasketch on the first ds_n articles of the same stream
        articles = Articles(a.seed).make(ds_n, 0)
        head = Indexer(client, Articles(a.seed), a.batch)
        before = used_memory(client)
        rh = head.feed(ds_n)
        dedup_bytes = (used_memory(client) - before) / ds_n
        head.index.drop()
        ds_rate, ds_bytes, ds_memory_rate = run_datasketch(client, articles, url)
        print(f"same {ds_n:,} articles: dedup {rh['rate']:,.0f} articles/s, {dedup_bytes:,.0f} bytes/article; "
              f"datasketch MinHashLSH (redis storage, 128 perm, threshold 0.5) {ds_rate:,.0f} articles/s, "
              f"{ds_bytes:,.0f} bytes/article; in memory (no storage, nothing shared) {ds_memory_rate:,.0f} "
              f"articles/s")
        print(f"ratios: speed dedup/datasketch {rh['rate'] / ds_rate:.1f}x with Redis storage (a round trip per "
              f"band), {rh['rate'] / ds_memory_rate:.1f}x against it in memory; "
              f"memory dedup/datasketch {dedup_bytes / ds_bytes:.2f}")
    finally:
        for ix in (small, large):
            if ix is not None:
                ix.index.drop()
        client.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

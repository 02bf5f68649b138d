"""Running counters for the periodic stats line an operator watches."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Counts since the last snapshot and since start; batch latency of the last interval."""

    articles: int = 0
    duplicates: int = 0
    new_stories: int = 0
    updates: int = 0
    dead_letters: int = 0
    redelivered: int = 0
    non_english: int = 0
    retries: int = 0
    closed: int = 0
    batches: int = 0
    total_articles: int = 0
    retrying_since: float | None = None  # monotonic time the batch in hand first failed; None: none is failing
    _latencies: list[float] = field(default_factory=list)
    _since: float = field(default_factory=time.monotonic)

    def batch(self, results, seconds: float) -> None:
        """Account for one committed batch."""
        self.batches += 1
        self._latencies.append(seconds)
        for r in results:
            if r.dead_letter is not None:
                self.dead_letters += 1
                continue
            if r.redelivered:
                self.redelivered += 1
                continue
            self.articles += 1
            d = r.decision
            self.duplicates += d.duplicate_of is not None
            self.updates += d.update_of is not None
            self.non_english += r.ner_skipped_language is not None
            self.new_stories += any(e.event == "created" for e in r.events)

    def snapshot(self) -> dict:
        """Figures for the interval since the previous snapshot, then reset the interval counters."""
        elapsed = max(time.monotonic() - self._since, 1e-9)
        lat = sorted(self._latencies)
        self.total_articles += self.articles
        out = {
            "articles": self.articles, "articles_per_s": round(self.articles / elapsed, 1),
            "duplicates": self.duplicates,
            "duplicate_rate": round(self.duplicates / self.articles, 3) if self.articles else 0.0,
            "new_stories": self.new_stories,
            "story_rate": round(self.new_stories / self.articles, 3) if self.articles else 0.0,
            "updates": self.updates, "dead_letters": self.dead_letters, "redelivered": self.redelivered,
            "non_english": self.non_english, "retries": self.retries, "stories_closed": self.closed,
            "batches": self.batches,
            "batch_latency_ms_p50": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
            "batch_latency_ms_max": round(lat[-1] * 1000, 1) if lat else None,
            "total_articles": self.total_articles, "interval_s": round(elapsed, 1),
            "retrying_s": round(time.monotonic() - self.retrying_since, 1) if self.retrying_since else 0.0,
        }
        for name in ("articles", "duplicates", "new_stories", "updates", "dead_letters", "redelivered",
                     "non_english", "retries", "closed", "batches"):
            setattr(self, name, 0)
        self._latencies = []
        self._since = time.monotonic()
        return out

"""Self-generated news-like articles for benchmarks: many distinct events, some copies, realistic lengths.

No text of any data set is used. Each event has invented people, places and organisations; reports of one
event share them and some wording, copies repeat a report with syndication noise.
"""
from __future__ import annotations

import datetime as dt
import random

_SYLLABLES = ["ka", "lo", "mi", "ran", "tes", "vo", "bel", "dor", "fin", "gra", "hal", "jen", "kor", "lem", "nar",
              "pol", "quin", "ros", "sal", "tor", "ul", "ven", "wil", "yor", "zan", "ber", "cas", "del", "mar"]
_VERBS = ["announced", "confirmed", "said", "reported", "warned", "denied", "approved", "rejected", "opened",
          "closed", "signed", "launched", "suspended", "expanded", "investigated"]
_NOUNS = ["agreement", "plan", "strike", "storm", "election", "trial", "merger", "protest", "budget", "fire",
          "vaccine", "bridge", "festival", "policy", "report", "deal", "outage", "flood", "summit", "contract"]
_FILLER = ["on Monday", "late on Tuesday", "after weeks of talks", "according to officials", "in a statement",
           "despite objections", "for the second time this year", "amid growing concern", "without warning",
           "to the surprise of analysts", "at a press conference", "in the city centre", "near the harbour"]


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _event(rng: random.Random) -> dict:
    return {"person": f"{_name(rng)} {_name(rng, 3)}", "place": _name(rng, 3), "org": f"{_name(rng)} Group",
            "noun": rng.choice(_NOUNS), "verb": rng.choice(_VERBS), "n": rng.randint(2, 900)}


def _sentence(rng: random.Random, ev: dict) -> str:
    templates = [
        "{person} {verb} the {noun} in {place} {f}.",
        "The {org} said {n} people were affected by the {noun} {f}.",
        "Officials in {place} {verb} that the {noun} would continue {f}.",
        "{person}, who leads the {org}, {verb} the decision {f}.",
        "Residents of {place} {verb} the {noun} {f}, while the {org} declined to comment.",
    ]
    return rng.choice(templates).format(f=rng.choice(_FILLER), **ev)


def articles(count: int, seed: int = 1, copy_rate: float = 0.1, reports_per_event: int = 3,
             sentences: int = 14) -> list[dict]:
    """`count` input articles in time order; about `copy_rate` of them syndicated copies of an earlier one."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    out: list[dict] = []
    event: dict = _event(rng)
    for i in range(count):
        when = (start + dt.timedelta(seconds=30 * i)).isoformat()
        if out and rng.random() < copy_rate:
            src = rng.choice(out[-200:])
            out.append({**src, "id": f"syn-{seed}-{i}", "source": f"wire{rng.randint(1, 40)}.example",
                        "url": src["url"].replace("https://", f"https://wire{i}.") + "?utm_source=rss",
                        "text": f"{event['place'].upper()} (Wire) - {src['text']}", "published_at": when})
            continue
        if i % reports_per_event == 0:
            event = _event(rng)
        body = " ".join(_sentence(rng, event) for _ in range(sentences))
        out.append({"id": f"syn-{seed}-{i}", "url": f"https://news{i % 50}.example/{seed}/{i}",
                    "source": f"news{i % 50}.example", "title": f"{event['person']} {event['verb']} "
                    f"{event['noun']} in {event['place']}", "text": body, "published_at": when, "language": "en"})
    return out

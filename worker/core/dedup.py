"""The duplicate decision for one article, given its fingerprint and what the index holds.

Pure: the Redis adapter gathers the evidence (earlier decision for the same id, the article last seen at the
same canonical URL, the original with the same content, originals at least two of whose anchor samples the
article holds) and applies the outcome. Rules, in order:

1. an article id decided before gets its stored outcome back (redelivery);
2. same canonical URL: same content is an `exact_url` duplicate, different content an update (no duplicate),
   but a headline alone (a feed item) of a page held with its body is an `exact_url` duplicate, not an update
   that would re-enrich the article from its title; an update replaces the version the URL holds in its story
   (after an `exact_url` copy, the version that copy copied);
3. same normalised content: `exact_content`;
4. sketch overlap with an original: `near_copy` when most of the smaller article is contained in the other,
   `rewrite` when the overlap is lower but spread over the whole of both articles (sentence-by-sentence
   rewording keeps short phrases everywhere, a shared block of boilerplate does not). A headline-only item
   and an article with a body are never compared so: the headline is contained in every article that quotes
   it (a briefing, a "Read more" line), and two outlets' bodies under one wire headline may differ.

Boilerplate is handled twice, without naming any: samples that already index many unrelated originals weigh
nothing (the adapter reports them), and two pages with unrelated headlines are never linked by their bodies
when a body does not mention its own headline (a sign-up form, a list of videos) or the article's body does not
mention the other's (two briefs sharing a long footer).
Only entries within `window` seconds of event time before `now` (the largest event time seen) count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from worker.core.fingerprint import (SUPPORT_THRESHOLD, Fingerprint, Overlap, mentions, overlap,
                                     title_relatedness)

NEAR_COPY_CONTAINMENT = 0.72
REWRITE_JACCARD = 0.35
REWRITE_SPREAD = 0.75
MIN_SHARED = 3
UNRELATED_TITLES = 0.2


@dataclass(frozen=True)
class DedupInput:
    article_id: str
    canonical_url: str
    title: str
    text: str
    event_time: float


@dataclass(frozen=True)
class DedupOutcome:
    article_id: str
    duplicate_of: str | None
    kind: str | None
    similarity: float | None
    update_of: str | None
    matched: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IndexedArticle:
    """What the index keeps of an article: enough to compare with, and where a duplicate points."""
    article_id: str
    event_time: float
    content_key: bytes
    level: int = 0
    sketch: tuple[int, ...] = ()
    title_words: frozenset[int] = frozenset()
    body_supports_title: bool = True
    duplicate_of: str | None = None
    # No body (None: not known, a record written before it was kept). An `exact_url` copy (the page sent again, a
    # feed's headline of it) stands for the version it copies: that version's, and in `url_version` its id, the
    # version the next update of the URL replaces. None: itself.
    headline_only: bool | None = False
    url_version: str | None = None

    @property
    def version_at_url(self) -> str:
        return self.url_version or self.article_id

    @property
    def root(self) -> str:
        return self.duplicate_of or self.article_id


@dataclass(frozen=True)
class Evidence:
    stored: DedupOutcome | None = None
    same_url: IndexedArticle | None = None
    same_content: IndexedArticle | None = None
    candidates: tuple[IndexedArticle, ...] = ()
    boilerplate: frozenset[int] = frozenset()


def decide(item: DedupInput, fp: Fingerprint, evidence: Evidence, now: float, window: float) -> DedupOutcome:
    if evidence.stored is not None:
        return evidence.stored

    def live(other: IndexedArticle | None) -> bool:
        """In the window, and neither this article nor a copy of it (met again when it is replayed)."""
        return other is not None and item.article_id not in (other.article_id, other.root) \
            and other.event_time >= now - window

    update_of = None
    if live(evidence.same_url):
        if evidence.same_url.content_key == fp.content_key:
            return _duplicate(item, evidence.same_url.root, "exact_url", 1.0, {"by": "canonical_url"})
        if fp.headline_only and evidence.same_url.headline_only is False:  # a feed's headline of a page held in full
            return _duplicate(item, evidence.same_url.root, "exact_url", 1.0,
                              {"by": "canonical_url", "headline_only": True})
        update_of = evidence.same_url.version_at_url
    if update_of is None and fp.sketch:
        same = evidence.same_content
        if live(same) and not _template_pair(fp, same):
            return _duplicate(item, same.root, "exact_content", 1.0, {"by": "content_hash"})
        best = _best_match(fp, [c for c in evidence.candidates if live(c)], evidence.boilerplate)
        if best is not None:
            kind, similarity, original, ov = best
            return _duplicate(item, original.root, kind, similarity, {
                "by": "shingles", "containment": round(ov.containment, 4), "jaccard": round(ov.jaccard, 4),
                "shared": ov.shared, "spread": ov.spread})
    matched = {"by": "canonical_url"} if update_of else {}
    if update_of and update_of != evidence.same_url.article_id:   # named through the copy the URL holds last
        matched["url_record"] = evidence.same_url.article_id
    return DedupOutcome(item.article_id, None, None, None, update_of, matched)


def _best_match(fp: Fingerprint, candidates: list[IndexedArticle], boilerplate: frozenset[int]):
    best, best_key = None, None
    own = set(fp.sketch)
    for original in candidates:
        if original.headline_only is not None and original.headline_only != fp.headline_only:
            continue        # a headline alone is contained in every article that quotes it: no evidence
        if len(own.intersection(original.sketch)) < MIN_SHARED:
            continue        # cannot classify: the kept samples are a subset of the sketches
        if _template_pair(fp, original):
            continue
        ov = overlap(fp.sketch, fp.level, original.sketch, original.level, boilerplate)
        kind = classify(ov)
        if kind is None:
            continue
        similarity = round(ov.containment if kind == "near_copy" else ov.jaccard, 4)
        key = (kind == "near_copy", similarity, -original.event_time, original.article_id)
        if best_key is None or key > best_key:
            best, best_key = (kind, similarity, original, ov), key
    return best


def classify(ov: Overlap) -> str | None:
    """`near_copy`, `rewrite` or None for the overlap of two sketches."""
    if ov.shared < MIN_SHARED:
        return None
    if ov.containment >= NEAR_COPY_CONTAINMENT:
        return "near_copy"
    if ov.jaccard >= REWRITE_JACCARD and ov.spread >= REWRITE_SPREAD:
        return "rewrite"
    return None


def _template_pair(fp: Fingerprint, other: IndexedArticle) -> bool:
    """Unrelated headlines, and text they share that is not the story: a body that does not mention its own
    headline is site furniture (a sign-up form, a list of videos); a body that does not mention the other's
    headline is another story that shares furniture with it (two briefs over one long legal footer). A copy
    under a new headline carries the original's body, and with it the words of the original's headline."""
    if title_relatedness(fp.title_words, other.title_words) >= UNRELATED_TITLES:
        return False
    if not (fp.body_supports_title and other.body_supports_title):
        return True
    return mentions(fp.body_words, other.title_words) < SUPPORT_THRESHOLD


def _duplicate(item: DedupInput, original: str, kind: str, similarity: float, matched: dict) -> DedupOutcome:
    return DedupOutcome(item.article_id, original, kind, similarity, None, matched)

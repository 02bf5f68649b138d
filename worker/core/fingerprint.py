"""Fingerprints of an article for duplicate detection: exact keys, a shingle sketch and index anchors.

Pure functions, no I/O. The content compared is the normalised body (the title when the body is absent):

- `url_key` / `content_key`: 8-byte hashes of the canonical URL and of the case/space-insensitive content.
- `sketch`: word 3-shingles sampled by their hash (content-defined), so that a copy which keeps a part of
  the article (truncation, added head or tail) keeps the samples of that part. The sampling level is the
  smallest `j` with at most `SKETCH_SIZE` shingles whose hash has `j` trailing zero bits; two sketches are
  compared at the coarser of their two levels, where both are unbiased samples of the same shingle subset.
- `anchors`: the few samples an original is indexed under (the highest-level samples plus the first ones,
  which survive truncation). A query looks up all its samples, so it finds an original by any shared anchor.
- `title_words` / `body_supports_title`: whether the body is about the headline at all; a crawled page whose
  body is site furniture (sign-up forms, video lists) does not mention its own headline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from worker.core.normalize import canonical_url, normalize_text, words

SHINGLE_WORDS = 3
SKETCH_SIZE = 96
RANKED_ANCHORS = 6
HEAD_ANCHORS = 2
TITLE_WORDS = 12
MIN_TITLE_WORD_LEN = 4
SUPPORT_THRESHOLD = 0.2
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Fingerprint:
    url_key: bytes
    content_key: bytes
    level: int
    sketch: tuple[int, ...]          # 32-bit samples in document order (low bits keep the sampling level)
    anchors: tuple[int, ...]
    title_words: frozenset[int]      # 16-bit hashes of the headline's longer words
    body_supports_title: bool


@dataclass(frozen=True)
class Overlap:
    shared: int
    containment: float   # shared / size of the smaller sample set
    jaccard: float
    spread: float        # fraction of quarters of each sketch holding a shared sample (the smaller of both)


def trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1 if value else 32


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def shingle_hashes(tokens: list[str]) -> list[int]:
    """32-bit hashes of word shingles in document order (one shingle for texts shorter than a shingle).

    Words are hashed once; a shingle's hash mixes its words' hashes (vectorised, wrapping uint64 arithmetic).
    """
    if not tokens:
        return []
    word_hashes = np.fromiter((xxhash.xxh3_64_intdigest(t.encode()) for t in tokens), np.uint64, len(tokens))
    if len(tokens) < SHINGLE_WORDS:
        word_hashes = np.concatenate([word_hashes, np.zeros(SHINGLE_WORDS - len(tokens), np.uint64)])
    n = len(word_hashes) - SHINGLE_WORDS + 1
    with np.errstate(over="ignore"):
        h = np.zeros(n, np.uint64)
        for offset, factor in enumerate(_MIX):
            h = (h ^ word_hashes[offset:offset + n]) * factor
        h ^= h >> np.uint64(29)
        h *= _MIX[0]
        h ^= h >> np.uint64(32)
    return (h & np.uint64(_MASK32)).tolist()


def sample(hashes: list[int]) -> tuple[int, tuple[int, ...]]:
    """(level, samples): the shingle samples at the lowest level that keeps at most SKETCH_SIZE."""
    distinct = list(dict.fromkeys(hashes))
    zeros = [trailing_zeros(h) for h in distinct]
    level = 0 if len(distinct) <= SKETCH_SIZE else sorted(zeros, reverse=True)[SKETCH_SIZE] + 1
    return level, tuple(h for h, z in zip(distinct, zeros) if z >= level)


def choose_anchors(sketch: tuple[int, ...]) -> tuple[int, ...]:
    ranked = sorted(sketch, key=lambda h: (-trailing_zeros(h), h))[:RANKED_ANCHORS]
    return tuple(dict.fromkeys(ranked + list(sketch[:HEAD_ANCHORS])))


def title_word_hashes(title: str) -> frozenset[int]:
    long_words = [w for w in words(title) if len(w) >= MIN_TITLE_WORD_LEN]
    return frozenset(xxhash.xxh3_64_intdigest(w.encode()) & 0xFFFF for w in long_words[:TITLE_WORDS])


def supports_title(title: str, body_tokens: list[str]) -> bool:
    """True when enough of the headline's longer words occur in the body (or there is nothing to check)."""
    headline = {w for w in words(title) if len(w) >= MIN_TITLE_WORD_LEN}
    if not headline or not body_tokens:
        return True
    body = set(body_tokens)
    return sum(w in body for w in headline) / len(headline) >= SUPPORT_THRESHOLD


def fingerprint(url: str, title: str, text: str) -> Fingerprint:
    title_n = normalize_text(title)
    body_tokens = words(normalize_text(text))
    content_tokens = body_tokens or words(title_n)
    level, sketch = sample(shingle_hashes(content_tokens))
    return Fingerprint(
        url_key=xxhash.xxh3_64_digest(canonical_url(url).encode()),
        content_key=xxhash.xxh3_64_digest(" ".join(content_tokens).encode()),
        level=level,
        sketch=sketch,
        anchors=choose_anchors(sketch),
        title_words=title_word_hashes(title_n),
        body_supports_title=supports_title(title_n, body_tokens),
    )


def overlap(a: tuple[int, ...], a_level: int, b: tuple[int, ...], b_level: int,
            ignore: frozenset[int] = frozenset()) -> Overlap:
    """Compare two sketches at their common level, leaving out samples known to be boilerplate."""
    level = max(a_level, b_level)
    a_kept = [h for h in a if trailing_zeros(h) >= level and h not in ignore]
    b_kept = [h for h in b if trailing_zeros(h) >= level and h not in ignore]
    shared = set(a_kept) & set(b_kept)
    if not a_kept or not b_kept:
        return Overlap(0, 0.0, 0.0, 0.0)
    union = len(set(a_kept) | set(b_kept))
    return Overlap(
        shared=len(shared),
        containment=len(shared) / min(len(a_kept), len(b_kept)),
        jaccard=len(shared) / union,
        spread=min(_quarters_hit(a_kept, shared), _quarters_hit(b_kept, shared)),
    )


def _quarters_hit(samples: list[int], shared: set[int]) -> float:
    quarters = {4 * i // len(samples) for i, h in enumerate(samples) if h in shared}
    return len(quarters) / min(4, len(samples))


def title_relatedness(a: frozenset[int], b: frozenset[int]) -> float:
    """Share of the shorter headline's longer words found in the other (1.0 when either has none)."""
    if not a or not b:
        return 1.0
    return len(a & b) / min(len(a), len(b))

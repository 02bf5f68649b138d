"""One-article definitions of the sketch rules of worker.core.fingerprint (see its module docstring), written
plainly: the batched, vectorised `fingerprints` must give exactly these, and the tests compare the two."""
from __future__ import annotations

from worker.core.fingerprint import HEAD_ANCHORS, RANKED_ANCHORS, SKETCH_SIZE, _shingles, _words


def trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1 if value else 32


def content_text(text: str | None) -> str:
    """The words of `text` joined by single spaces (what `content_key` hashes)."""
    return _words(text).joined.decode("utf-8")


def shingle_hashes(tokens: list[str]) -> list[int]:
    """32-bit hashes of the word shingles of a token list (as `fingerprint` computes them for a text)."""
    if not tokens:
        return []
    return _shingles(_words(" ".join(tokens)).hashes).tolist()


def sample(hashes) -> tuple[int, tuple[int, ...]]:
    """(level, samples): the distinct shingle hashes, in first-seen order, at the lowest level (trailing zero
    bits) that keeps at most SKETCH_SIZE of them."""
    distinct = list(dict.fromkeys(int(h) for h in hashes))
    level = 0
    while sum(trailing_zeros(h) >= level for h in distinct) > SKETCH_SIZE:
        level += 1
    return level, tuple(h for h in distinct if trailing_zeros(h) >= level)


def choose_anchors(sketch: tuple[int, ...]) -> tuple[int, ...]:
    """The RANKED_ANCHORS samples with the most trailing zeros (ties: the smaller hash), then the first
    HEAD_ANCHORS samples, without repeats."""
    ranked = sorted(sketch, key=lambda h: (-trailing_zeros(h), h))[:RANKED_ANCHORS]
    return tuple(dict.fromkeys(ranked + list(sketch[:HEAD_ANCHORS])))

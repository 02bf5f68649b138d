"""Fingerprints of an article for duplicate detection: exact keys, a shingle sketch and index anchors.

Pure functions, no I/O. The content compared is the normalised body (the title when the body is absent):

- `url_key` / `content_key`: 8-byte hashes of the canonical URL and of the case/space-insensitive content
  (the words of `normalize.words(normalize_text(...))` joined by single spaces).
- `sketch`: word 3-shingles sampled by their hash (content-defined), so that a copy which keeps a part of
  the article (truncation, added head or tail) keeps the samples of that part. The sampling level is the
  smallest `j` with at most `SKETCH_SIZE` shingles whose hash has `j` trailing zero bits; two sketches are
  compared at the coarser of their two levels, where both are unbiased samples of the same shingle subset.
- `anchors`: the few samples an original is indexed under (the highest-level samples plus the first ones,
  which survive truncation). A query finds an original by two shared anchors (one alone is a chance
  collision, see `worker.adapters.dedup_index.MIN_ANCHOR_HITS`) among its `probes`: only those can be the
  anchors of an article it copies, so only those are looked up in the index.
- `title_words` / `body_supports_title` / `body_words`: whether a body is about a headline at all; a crawled
  page whose body is site furniture (sign-up forms, video lists) does not mention its own headline, and two
  briefs sharing a long legal footer do not mention each other's. `headline_only`: there is no body.

Speed: tokenising and hashing are vectorised with numpy over the code points of the text. The tokens are
exactly those of `words(normalize_text(text))` (only the normalisation steps that can change a token are
applied; `tests/unit/test_fingerprint.py` checks the equivalence); a word's hash is a polynomial hash of its
code points modulo 2**64 with a final mix, computed for all words at once from prefix sums. `fingerprints`
does this for a whole batch in one pass over the concatenated texts (bodies and titles), then shingles,
samples and ranks anchors for all articles at once, so numpy's per-call overhead is paid once per batch
rather than once per article; the result is exactly that of each article alone, as the one-article
definitions of the rules in `tests/fingerprint_reference.py` give it (tested).
"""
from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import xxhash

from worker.core.normalize import (_INVISIBLE, _QUOTES, SOLO_RANGES, canonical_url, mark_ranges, normalize_text,
                                   words)

SHINGLE_WORDS = 3
SKETCH_SIZE = 64
RANKED_ANCHORS = 6
HEAD_ANCHORS = 2
PROBE_HEAD = 6
PROBE_LEVEL_MARGIN = 1
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
    body_words: frozenset[int]       # 16-bit hashes of the body's words when it has a headline (in memory only)
    # The samples that can be anchors of an article this one copies: its first PROBE_HEAD ones and those at
    # least PROBE_LEVEL_MARGIN above its level (about half the sketch). An original's ranked anchors are its
    # highest-level samples, two or more levels above its sketch's level (a quarter of a full sketch is); a copy
    # up to about twice the original's length samples at most one level higher, so they are among its samples
    # a level above its own. The original's head anchors are among the copy's first samples unless a long head
    # was added. `others` is the rest of the sketch.
    probes: frozenset[int]
    others: tuple[int, ...]
    headline_only: bool = False      # no body: the content compared is the title


@dataclass(frozen=True)
class Overlap:
    shared: int
    containment: float   # shared / size of the smaller sample set
    jaccard: float
    spread: float        # fraction of quarters of each sketch holding a shared sample (the smaller of both)


# ---------------------------------------------------------------- tokens and word hashes (vectorised)

# character classes: [^\W_] and combining marks, the in-word joiners ' . -, a character that is a word alone
_WORD, _CONNECTOR, _SOLO = 1, 2, 3
_ASCII_CLASS = np.array([_WORD if chr(c).isalnum() else _CONNECTOR if chr(c) in "'.-" else 0
                         for c in range(256)], np.int8)
_ASCII_CLASS[128:] = 0
_ASCII_CLASS_BYTES = _ASCII_CLASS.tobytes()
_unicode_class: np.ndarray | None = None
_ASCII_QUOTES = [(k, v) for k, v in ((chr(k), v) for k, v in _QUOTES.items()) if ord(k) < 128]

_P = 0x100000001B3 * 0x9E3779B1 | 1           # odd multiplier of the polynomial word hash (invertible mod 2**64)
_P_INV = pow(_P, -1, 1 << 64)
_RUN_CHARS = 1 << 20                           # characters fingerprinted in one numpy pass (see `fingerprints`)
_powers = np.ones(1, np.uint64)
_inverse_powers = np.ones(1, np.uint64)
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _unicode_classes() -> np.ndarray:
    global _unicode_class
    if _unicode_class is None:
        table = np.fromiter((chr(c).isalnum() for c in range(0x110000)), bool, 0x110000).astype(np.int8)
        for first, last in mark_ranges():
            table[first:last + 1] = _WORD
        for first, last in SOLO_RANGES:
            table[first:last + 1] = _SOLO
        for c in "'.-":
            table[ord(c)] = _CONNECTOR
        _unicode_class = table
    return _unicode_class


def _prepare(text: str | None) -> str:
    """The steps of `normalize_text` that can change a word token, then case folding (as `words` does)."""
    if not text:
        return ""
    if "&" in text:
        text = html.unescape(html.unescape(text))
    if text.isascii():
        for k, v in _ASCII_QUOTES:
            if k in text:
                text = text.replace(k, v)
    else:
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
        text = _INVISIBLE.sub("", text.translate(_QUOTES))
    text = text.casefold()
    return text.replace("i\u0307", "i") if "\u0307" in text else text


def _table(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _powers, _inverse_powers
    if len(_powers) < n:
        size = max(n, 2 * len(_powers))
        p = np.full(size, _P & 0xFFFFFFFFFFFFFFFF, np.uint64)
        q = np.full(size, _P_INV, np.uint64)
        p[0] = q[0] = 1
        _powers, _inverse_powers = np.cumprod(p), np.cumprod(q)      # (wraps modulo 2**64)
    return _powers, _inverse_powers


@dataclass(frozen=True)
class _Words:
    hashes: np.ndarray      # uint64 per word, in order
    joined: bytes           # UTF-8 of the words joined by single spaces


def _tokens(codes: np.ndarray, cls: np.ndarray):
    """Start, end (code point offsets) and 64-bit hash of each word, and the in-token mask."""
    n = len(codes)
    is_word = cls == _WORD
    is_solo = cls == _SOLO
    in_token = is_word | is_solo
    if n > 2:
        in_token[1:-1] |= (cls[1:-1] == _CONNECTOR) & is_word[:-2] & is_word[2:]
    padded = np.zeros(n + 2, bool)
    padded[1:-1] = in_token
    edge = padded[1:] != padded[:-1]                # n + 1 places between characters: a run starts or ends
    if is_solo.any():                                # and on both sides of a character that is a word alone
        edge[:-1] |= is_solo
        edge[1:] |= is_solo
    inside = np.zeros(n + 1, bool)                   # a token on the right of the place
    inside[:-1] = in_token
    starts = np.flatnonzero(edge & inside)
    ends = np.flatnonzero(edge & padded[:-1])        # a token on the left of the place
    if not len(starts):
        return starts, ends, np.zeros(0, np.uint64), in_token
    powers, inverse = _table(n)
    # (array arithmetic on unsigned integers wraps modulo 2**64 without a warning)
    prefix = np.zeros(n + 1, np.uint64)
    np.cumsum(codes.astype(np.uint64) * powers[:n], out=prefix[1:])
    lengths = ends - starts
    h = (prefix[ends] - prefix[starts]) * inverse[starts]
    h ^= lengths.astype(np.uint64) * _MIX[1]
    h ^= h >> np.uint64(31)
    h *= _MIX[0]
    h ^= h >> np.uint64(29)
    h *= _MIX[2]
    h ^= h >> np.uint64(32)
    return starts, ends, h, in_token


def _words(text: str | None) -> _Words:
    s = _prepare(text)
    if s.isascii():
        codes = np.frombuffer(s.encode("ascii"), np.uint8)
        cls = _ASCII_CLASS[codes]
    else:
        codes = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), np.uint32)
        cls = _unicode_classes()[codes]
    starts, ends, h, in_token = _tokens(codes, cls)
    if not len(starts):
        return _Words(np.zeros(0, np.uint64), b"")
    kept = np.insert(codes[in_token], np.cumsum(ends - starts)[:-1], 32)    # the words, one space between
    joined = kept.tobytes() if codes.dtype == np.uint8 else kept.tobytes().decode("utf-32-le").encode("utf-8")
    return _Words(h, joined)


def _shingles(word_hashes: np.ndarray) -> np.ndarray:
    """32-bit hashes of word shingles in document order (one shingle for texts shorter than a shingle)."""
    if len(word_hashes) < SHINGLE_WORDS:
        word_hashes = np.concatenate([word_hashes, np.zeros(SHINGLE_WORDS - len(word_hashes), np.uint64)])
    n = len(word_hashes) - SHINGLE_WORDS + 1
    with np.errstate(over="ignore"):
        h = np.zeros(n, np.uint64)
        for offset, factor in enumerate(_MIX):
            h = (h ^ word_hashes[offset:offset + n]) * factor
        h ^= h >> np.uint64(29)
        h *= _MIX[0]
        h ^= h >> np.uint64(32)
    return (h & np.uint64(_MASK32)).astype(np.uint32)


def _trailing_zeros(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.uint32)
    low = v & (~v + np.uint32(1))
    tz = np.log2(np.where(low == 0, 1, low)).astype(np.int64)
    return np.where(v == 0, 32, tz)


def fingerprint(url: str, title: str, text: str) -> Fingerprint:
    return fingerprints([(url, title, text)])[0]


def fingerprints(articles: Sequence[tuple[str, str, str]]) -> list[Fingerprint]:
    """`fingerprint` of each (url, title, text), computed for runs of the batch at once.

    Bodies and titles are concatenated (separated by a non-word character) and tokenised, hashed, shingled
    and sampled with one numpy pass each, which spares the per-call overhead of numpy on small arrays; every
    step only ever combines values of one text, so each result is that of the article on its own. A run holds
    at most `_RUN_CHARS` characters (one longer article goes alone): the working arrays, about 50 bytes per
    character, and the cached power tables stay bounded whatever the batch."""
    out: list[Fingerprint] = []
    run: list[tuple[str, str, str]] = []
    chars = 0
    for article in articles:
        size = len(article[1] or "") + len(article[2] or "")
        if run and chars + size > _RUN_CHARS:
            out += _fingerprints_of_run(run)
            run, chars = [], 0
        run.append(article)
        chars += size
    return out + _fingerprints_of_run(run) if run else out


def _fingerprints_of_run(articles: Sequence[tuple[str, str, str]]) -> list[Fingerprint]:
    segments = []
    for _, title, text in articles:
        segments.append(_prepare(text))
        segments.append(_prepare(title))
    n_docs = len(articles)
    seg_len = np.fromiter((len(x) for x in segments), np.int64, len(segments))
    seg_start = np.zeros(len(segments), np.int64)
    np.cumsum(seg_len[:-1] + 1, out=seg_start[1:])
    full = "\n".join(segments)
    wide = not full.isascii()
    if wide:
        codes = np.frombuffer(full.encode("utf-32-le", "surrogatepass"), np.uint32)
        cls = _unicode_classes()[codes]
    else:
        raw = full.encode("ascii")
        codes = np.frombuffer(raw, np.uint8)
        cls = np.frombuffer(raw.translate(_ASCII_CLASS_BYTES), np.int8)
    starts, ends, hashes, in_token = _tokens(codes, cls)
    word_seg = np.searchsorted(seg_start, starts, side="right") - 1
    seg_words = np.bincount(word_seg, minlength=len(segments))
    seg_first = np.zeros(len(segments) + 1, np.int64)
    np.cumsum(seg_words, out=seg_first[1:])
    body_words = seg_words[0::2]
    content_seg = np.arange(0, 2 * n_docs, 2) + (body_words == 0)      # the title when the body has no words
    content_words = seg_words[content_seg]

    # content keys: the content's words joined by single spaces
    kept_bytes = np.insert(codes[in_token], np.cumsum(ends - starts), 32).tobytes()  # each word, then a space
    width = 4 if wide else 1
    has_content = content_words > 0
    offset = np.zeros(len(starts) + 1, np.int64)     # where each word starts in kept_bytes
    np.cumsum(ends - starts + 1, out=offset[1:])
    first_word = seg_first[content_seg]
    lo = (offset[first_word] * width).tolist()
    hi = ((offset[first_word + content_words] - 1) * width).tolist()
    content_keys = []
    for d in range(n_docs):
        if not has_content[d]:
            joined = b""
        elif wide:
            joined = kept_bytes[lo[d]:hi[d]].decode("utf-32-le").encode("utf-8")
        else:
            joined = kept_bytes[lo[d]:hi[d]]
        content_keys.append(xxhash.xxh3_64_digest(joined))

    # shingles of each content, in document order
    n_words = len(hashes)
    is_content = np.zeros(len(segments), bool)
    is_content[content_seg[has_content]] = True
    if n_words >= SHINGLE_WORDS:
        m = n_words - SHINGLE_WORDS + 1
        valid = is_content[word_seg[:m]] & (word_seg[:m] == word_seg[SHINGLE_WORDS - 1:])
        shingles = _shingles(hashes)[valid]
        shingle_doc = word_seg[:m][valid] // 2
    else:
        shingles, shingle_doc = np.zeros(0, np.uint32), np.zeros(0, np.int64)
    short = np.flatnonzero(has_content & (content_words < SHINGLE_WORDS))
    if len(short):       # a content shorter than a shingle has one shingle (padded with zero hashes)
        extra = [_shingles(hashes[seg_first[content_seg[d]]:seg_first[content_seg[d]] + content_words[d]])
                 for d in short.tolist()]
        shingles = np.concatenate([shingles] + extra)
        shingle_doc = np.concatenate([shingle_doc, short])
        order = np.argsort(shingle_doc, kind="stable")
        shingles, shingle_doc = shingles[order], shingle_doc[order]
    level, samples, zeros, sample_doc = _sample_batch(shingles, shingle_doc, n_docs)
    counts = np.bincount(sample_doc, minlength=n_docs)
    bounds = np.zeros(n_docs + 1, np.int64)
    np.cumsum(counts, out=bounds[1:])
    rank_key = (sample_doc.astype(np.uint64) << np.uint64(38)) | ((32 - zeros).astype(np.uint64) << np.uint64(32))
    ranked = np.argsort(rank_key | samples.astype(np.uint64))     # by document, most trailing zeros, value
    rank = np.arange(len(ranked)) - bounds[sample_doc[ranked]]
    top = ranked[rank < RANKED_ANCHORS]
    top_doc = sample_doc[top]
    top_bounds = np.searchsorted(top_doc, np.arange(n_docs + 1))
    sample_list = samples.tolist()
    position = np.arange(len(samples)) - bounds[sample_doc]
    probe = (position < PROBE_HEAD) | (zeros >= level[sample_doc] + PROBE_LEVEL_MARGIN)
    probe_list, other_list = samples[probe].tolist(), samples[~probe].tolist()
    probe_l = np.searchsorted(sample_doc[probe], np.arange(n_docs + 1)).tolist()
    other_l = np.searchsorted(sample_doc[~probe], np.arange(n_docs + 1)).tolist()
    top_list = samples[top].tolist()
    bounds_l, top_l, level_l = bounds.tolist(), top_bounds.tolist(), level.tolist()

    # headlines: the hashes of the title's longer words, but for an outlet's name after it ("... - Reuters")
    title_mask = np.zeros(n_words, bool)
    long_enough = (ends - starts) >= MIN_TITLE_WORD_LEN
    is_title = (word_seg & 1) == 1
    title_end = seg_first[1:][word_seg]             # one past the last word of each word's segment
    site = np.zeros(len(segments), np.int64)
    site[1::2] = [site_name_words(title, url) for url, title, _ in articles]
    title_mask[is_title & long_enough & (np.arange(n_words) < title_end - site[word_seg])] = True
    title_idx = np.flatnonzero(title_mask)
    title_hashes = hashes[title_idx].tolist()
    title_doc = (word_seg[title_idx] // 2).tolist()
    headlines: list[list[int]] = [[] for _ in range(n_docs)]
    for d, h in zip(title_doc, title_hashes):
        headlines[d].append(h)
    body_first, body_count = seg_first[0::2].tolist(), body_words.tolist()
    need_body = [d for d in range(n_docs) if headlines[d] and body_count[d]]
    body_lists = {}
    if need_body:
        all_hashes = hashes.tolist() if len(need_body) > 4 else None
        for d in need_body:
            a, b = body_first[d], body_first[d] + body_count[d]
            body_lists[d] = all_hashes[a:b] if all_hashes is not None else hashes[a:b].tolist()

    out = []
    for d, (url, _, _) in enumerate(articles):
        a, b = bounds_l[d], bounds_l[d + 1]
        sketch = tuple(sample_list[a:b])
        if sketch:
            ranked_anchors = top_list[top_l[d]:top_l[d + 1]]
            anchors = tuple(dict.fromkeys(ranked_anchors + sample_list[a:min(b, a + HEAD_ANCHORS)]))
        else:
            anchors = ()
        headline = headlines[d]
        supported = True
        body_words: frozenset[int] = frozenset()
        if d in body_lists:
            wanted = set(headline)
            supported = len(wanted.intersection(body_lists[d])) / len(wanted) >= SUPPORT_THRESHOLD
            body_words = frozenset(h & 0xFFFF for h in body_lists[d])  # as `title_words`: compared with them
        out.append(Fingerprint(
            url_key=xxhash.xxh3_64_digest(canonical_url(url).encode()),
            content_key=content_keys[d],
            level=level_l[d] if sketch else 0,
            sketch=sketch,
            anchors=anchors,
            title_words=frozenset(h & 0xFFFF for h in headline[:TITLE_WORDS]),
            body_supports_title=supported,
            body_words=body_words,
            probes=frozenset(probe_list[probe_l[d]:probe_l[d + 1]]),
            others=tuple(other_list[other_l[d]:other_l[d + 1]]),
            headline_only=not body_count[d],
        ))
    return out


def _sample_batch(shingles: np.ndarray, doc: np.ndarray, n_docs: int):
    """The sketch of each document's shingles (grouped by document, in order): the lowest level keeping at most
    SKETCH_SIZE distinct samples, per document, and the kept samples with their trailing zeros and document, in
    document order."""
    if not len(shingles):
        return np.zeros(n_docs, np.int64), shingles, np.zeros(0, np.int64), doc
    key = (doc.astype(np.uint64) << np.uint64(32)) | shingles.astype(np.uint64)
    order = np.argsort(key)
    ordered = key[order]
    group = np.ones(len(key), bool)
    group[1:] = ordered[1:] != ordered[:-1]
    first = np.minimum.reduceat(order, np.flatnonzero(group))        # first occurrence of each distinct value
    distinct = np.zeros(len(key), bool)
    distinct[first] = True
    zeros = _trailing_zeros(shingles)
    table = np.bincount(doc[distinct] * 34 + zeros[distinct], minlength=34 * n_docs).reshape(n_docs, 34)
    at_least = np.cumsum(table[:, ::-1], axis=1)[:, ::-1]          # distinct samples with >= j trailing zeros
    level = np.argmax(at_least <= SKETCH_SIZE, axis=1)               # column 33 is always 0
    kept = distinct & (zeros >= level[doc])
    return level, shingles[kept], zeros[kept], doc[kept]


def overlap(a: tuple[int, ...], a_level: int, b: tuple[int, ...], b_level: int,
            ignore: frozenset[int] = frozenset()) -> Overlap:
    """Compare two sketches at their common level, leaving out samples known to be boilerplate."""
    level = max(a_level, b_level)
    mask = (1 << level) - 1        # trailing_zeros(h) >= level  <=>  not h & mask
    a_kept = _kept(a, a_level, level, mask, ignore)
    b_kept = _kept(b, b_level, level, mask, ignore)
    if not a_kept or not b_kept:
        return Overlap(0, 0.0, 0.0, 0.0)
    a_set = set(a_kept)
    shared = a_set.intersection(b_kept)
    n_shared = len(shared)
    if not n_shared:
        return Overlap(0, 0.0, 0.0, 0.0)
    union = len(a_set.union(b_kept))
    return Overlap(
        shared=n_shared,
        containment=n_shared / min(len(a_kept), len(b_kept)),
        jaccard=n_shared / union,
        spread=min(_quarters_hit(a_kept, shared), _quarters_hit(b_kept, shared)),
    )


def _kept(samples, own_level: int, level: int, mask: int, ignore: frozenset[int]):
    if level > own_level:
        samples = [h for h in samples if not h & mask]
    if ignore:
        samples = [h for h in samples if h not in ignore]
    return samples


def _quarters_hit(samples, shared: set[int]) -> float:
    n = len(samples)
    quarters = {4 * i // n for i, h in enumerate(samples) if h in shared}
    return len(quarters) / min(4, n)


_TITLE_SEPARATOR = re.compile(r"\s(?:\||-|\u2013|\u2014|:|::|\u00b7|\u00bb)\s")
_GENERIC_HOST_LABELS = frozenset({"www", "news", "mobile", "online", "blog", "blogs", "home", "edition",
                                  "wordpress", "blogspot", "info", "feeds"})


_SITE_NAME_TAIL = frozenset({"tv", "news", "radio", "online", "com", "net", "org", "local", "live", "channel"})


def site_name_words(title: str | None, url: str) -> int:
    """How many words at the end of a headline name its outlet ("... - KCTV5", "... :: WRAL.com", "... | Daily
    Gazette", "... - WNEM TV 5"): the segment after the last separator, of at most three words, whose first words
    spell a name of the URL's host ("kctv5", "dailygazette"), or whose first word starts with one ("WRAL.com"),
    followed by nothing but words like "TV", "News", numbers or other labels of the host ("Reuters UK"). Two headlines of one outlet share it, which
    would make any two of them look related."""
    parts = _TITLE_SEPARATOR.split(title or "")
    if len(parts) < 2:
        return 0
    tokens = [t for t in ("".join(c for c in token.lower() if c.isalnum()) for token in parts[-1].split()) if t]
    try:
        host = (urlsplit(url).hostname or "").lower() if url else ""
    except ValueError:  # a host urlsplit cannot read ("news[1.example"): no name to find
        return 0
    labels = set(host.split("."))
    names = {label for label in labels if len(label) >= 4 and label not in _GENERIC_HOST_LABELS}
    if not tokens or len(tokens) > 3 or not names:
        return 0
    spelled = next((n for n in range(1, len(tokens) + 1) if "".join(tokens[:n]) in names), 0)
    if not spelled and any(tokens[0].startswith(name) for name in names):
        spelled = 1
    tail = tokens[spelled:]   # "TV 5", "TV5", "UK" of uk.reuters.com, "Finance" of finance.yahoo.com
    if not spelled or not all(t.rstrip("0123456789") in _SITE_NAME_TAIL | labels | {""} for t in tail):
        return 0
    head = title[:len(title) - len(parts[-1])]
    kept = len(words(normalize_text(head)))
    return len(words(normalize_text(title))) - kept if kept else 0


def mentions(body_words: frozenset[int], title_words: frozenset[int]) -> float:
    """Share of a headline's longer words that a body holds, both as 16-bit hashes (1.0 when either is empty)."""
    if not body_words or not title_words:
        return 1.0
    return len(title_words & body_words) / len(title_words)


def title_relatedness(a: frozenset[int], b: frozenset[int]) -> float:
    """Share of the shorter headline's longer words found in the other (1.0 when either has none)."""
    if not a or not b:
        return 1.0
    return len(a & b) / min(len(a), len(b))

"""Canonical URLs and normalised text: the identity of an article before anything is compared.

Pure functions, no I/O. Scraped text arrives with HTML entities, typographic quotes, odd Unicode forms and
irregular whitespace; two copies of one article must normalise to the same string.
"""
from __future__ import annotations

import functools
import html
import re
import unicodedata
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import idna
import xxhash

# Query parameters that identify a click, campaign or session, never the document.
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "piwik_", "matomo_", "hsa_", "_hs", "vero_", "oly_")
_TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "twclid", "igshid", "mkt_tok", "ref", "ref_src",
    "ref_url", "cmpid", "cmp", "ocid", "icid", "ncid", "sr_share", "share", "smid", "smtyp", "s_cid", "spm",
    "__twitter_impression", "_ga", "_gl", "wt.mc_id", "rss", "feature", "src",
})
_DEFAULT_PORTS = {"http": "80", "https": "443"}

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u2026": "...",
})
# Zero-width characters, the soft hyphen and the bidirectional marks, embeddings and isolates of RTL pages
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\u00ad\u202a-\u202e\u2066-\u2069]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_PLAIN_WORD = re.compile(r"[^\W_]+(?:['.\-][^\W_]+)*")
# Scripts written without spaces between words (Chinese characters, kana): each character is a word of its own,
# so that content keys, shingles and headline words read such text as they read spaced text.
SOLO_RANGES = ((0x3041, 0x3096), (0x309D, 0x309F), (0x30A1, 0x30FA), (0x30FC, 0x30FF), (0x3400, 0x4DBF),
               (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def is_solo(word: str) -> bool:
    """A word of an unspaced script (one character: see `words`)."""
    return len(word) == 1 and any(first <= ord(word) <= last for first, last in SOLO_RANGES)


@functools.cache
def mark_ranges() -> tuple[tuple[int, int], ...]:
    """Code point ranges of the combining marks (Unicode category M): Indic vowel signs, Arabic harakat and the
    like belong to the word they sit in ("दिन" is not "दान"). Planes 0, 1 and 14 hold them all."""
    ranges: list[tuple[int, int]] = []
    for c in [*range(0x20000), *range(0xE0000, 0xE1000)]:
        if unicodedata.category(chr(c))[0] == "M":
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1] = (ranges[-1][0], c)
            else:
                ranges.append((c, c))
    return tuple(ranges)


@functools.cache
def _special_bmp() -> frozenset[str]:
    """The marks and unspaced-script characters of the Basic Multilingual Plane (30,000; about 3 MB)."""
    return frozenset(chr(c) for first, last in (*SOLO_RANGES, *mark_ranges())
                     for c in range(first, min(last, 0xFFFF) + 1))


@functools.cache
def _word_pattern() -> re.Pattern:
    def char_class(ranges) -> str:
        return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)

    solo, marks = char_class(SOLO_RANGES), char_class(mark_ranges())
    part = f"(?:[^\\W_{solo}]|[{marks}])+"
    return re.compile(f"[{solo}]|{part}(?:['.\\-]{part})*")


def canonical_url(url: str) -> str:
    """One spelling per document: `https` for `http` too, host lower-case, IDNA-encoded, without `www.` or a
    default port; the path without repeated or trailing slashes; tracking parameters dropped and the others
    sorted; percent-escapes in one form (non-ASCII escaped, hex upper-case, invalid UTF-8 kept as escaped, so
    that two different bytes never merge); an `&amp;` left by HTML read as `&`. The fragment is dropped, but
    for `#!` (a hash-bang route, which names the document on such sites).
    """
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "http").lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if scheme == "http":
        scheme = "https"
    host = _idna((parts.hostname or "").lower().rstrip("."))
    if host.startswith("www."):
        host = host[4:]
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port if parts.netloc and _safe_port(parts) else None
    netloc = host if port is None or str(port) == default_port else f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", _escaped(parts.path or "/", _PATH_SAFE))
    if len(path) > 1:
        path = path.rstrip("/")
    pairs = [p for p in parts.query.replace("&amp;", "&").split("&") if p]
    query = sorted(_escaped(p, _QUERY_SAFE) for p in pairs if not _is_tracking(unquote_plus(p.split("=", 1)[0])))
    fragment = _escaped(parts.fragment, _PATH_SAFE) if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, path, "&".join(query), fragment))


_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = "=:@!$'()*+,;/?-._~%"
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def _escaped(part: str, safe: str) -> str:
    """`part` with every character outside `safe` percent-escaped and every escape in upper-case hex."""
    return _ESCAPE.sub(lambda m: m.group(0).upper(), quote(part, safe=safe))


def _idna(host: str) -> str:
    """An international host name in its ASCII form by IDNA 2008 (UTS 46 mapping): "faß.de" and "fass.de" are
    two domains, which the older IDNA 2003 of Python's codec merges; a name IDNA 2008 refuses (an emoji
    domain) by IDNA 2003, else as written (validation allowed it)."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _safe_port(parts) -> bool:
    try:
        return parts.port is not None
    except ValueError:  # "host:notaport"
        return False


def _is_tracking(key: str) -> bool:
    k = key.lower()
    return k in _TRACKING_PARAMS or k.startswith(_TRACKING_PREFIXES)


def normalize_text(text: str | None) -> str:
    """NFKC, HTML entities decoded, quotes/dashes/spaces unified, controls removed, whitespace collapsed.

    Paragraph breaks survive as a single blank line so that paragraph structure stays usable downstream.
    """
    if not text:
        return ""
    s = html.unescape(html.unescape(text))  # double-escaped entities ("&amp;amp;") are common in feeds
    s = unicodedata.normalize("NFKC", s).translate(_QUOTES)
    s = _INVISIBLE.sub("", s)
    s = _CONTROL.sub(" ", s.replace("\r\n", "\n").replace("\r", "\n"))
    s = _SPACES.sub(" ", s)
    s = "\n".join(line.strip() for line in s.split("\n"))
    return _BLANK_LINES.sub("\n\n", s).strip()


def words(text: str) -> list[str]:
    """Case-folded word tokens of already normalised text: letters and digits with their combining marks, joined
    by ' . -' within a word; a Chinese character or a kana is a word alone."""
    folded = text.casefold()
    if "\u0307" in folded:  # "İstanbul" folds to "i̇stanbul": the dot of a capital İ is not a letter of its own
        folded = folded.replace("i\u0307", "i")
    if folded.isascii() or (_special_bmp().isdisjoint(folded) and max(folded) <= "\uffff"):
        return _PLAIN_WORD.findall(folded)  # no mark, no unspaced script: the plain pattern is 3-5x faster
    return _word_pattern().findall(folded)


def article_id_for(url: str, text: str | None, title: str | None = None) -> str:
    """Identity of an article that came without an `id`: canonical URL plus normalised content, which is the
    body's words, or the title's when the body has none (a headline-only item; its dedup content likewise)."""
    content = " ".join(words(normalize_text(text))) or " ".join(words(normalize_text(title)))
    return "a-" + xxhash.xxh3_128_hexdigest((canonical_url(url) + "\x00" + content).encode())[:24]

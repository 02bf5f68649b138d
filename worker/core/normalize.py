"""Canonical URLs and normalised text: the identity of an article before anything is compared.

Pure functions, no I/O. Scraped text arrives with HTML entities, typographic quotes, odd Unicode forms and
irregular whitespace; two copies of one article must normalise to the same string.
"""
from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_WORD = re.compile(r"[^\W_]+(?:['.\-][^\W_]+)*", re.UNICODE)


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, drop default port, fragment, tracking parameters and trailing slash.

    Remaining query parameters are sorted so that parameter order does not make two URLs differ.
    """
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    port = parts.port if parts.netloc and _safe_port(parts) else None
    netloc = host if port is None or str(port) == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = re.sub(r"/{2,}", "/", parts.path or "/")
    if len(path) > 1:
        path = path.rstrip("/")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


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
    """Case-folded word tokens of already normalised text."""
    return _WORD.findall(text.casefold())


def article_id_for(url: str, text: str | None) -> str:
    """Identity of an article that came without an `id`: canonical URL plus normalised content."""
    key = canonical_url(url) + "\x00" + " ".join(words(normalize_text(text)))
    return "a-" + xxhash.xxh3_128_hexdigest(key.encode())[:24]

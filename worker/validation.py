"""Raw bytes -> a validated Article, or an InvalidMessage naming the reason. Pure; never raises anything else."""
from __future__ import annotations

import json

from pydantic import ValidationError

from .errors import InvalidMessage
from .models import Article

_MAX_JSON_DEPTH = 32


def parse_article(value: bytes | None, *, max_bytes: int, max_text_chars: int) -> Article:
    """Decode, parse and validate one message; raise InvalidMessage with a machine class and a readable reason."""
    if value is None:
        raise InvalidMessage("invalid", "empty message (tombstone)")
    if not value.strip():
        raise InvalidMessage("invalid", "empty message (nothing but whitespace)")
    if len(value) > max_bytes:
        raise InvalidMessage("oversize", f"message is {len(value)} bytes, the limit is {max_bytes}")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("not_utf8", f"not UTF-8: {exc}") from None
    brackets = decoded.count("{") + decoded.count("[")
    if brackets > _MAX_JSON_DEPTH and _nesting_depth(decoded) > _MAX_JSON_DEPTH:
        raise InvalidMessage("invalid", f"JSON nested deeper than {_MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(decoded, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise InvalidMessage("invalid", f"duplicate key {exc.args[0]!r} (which value holds is ambiguous)") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InvalidMessage("not_json", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("invalid", f"expected a JSON object, got {type(data).__name__}")
    try:
        article = Article.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage("invalid", _describe(exc)) from None
    if article.text and len(article.text) > max_text_chars:
        raise InvalidMessage("oversize", f"text is {len(article.text)} characters, the limit is {max_text_chars}")
    if "\x00" in article.url or "\x00" in article.source:
        raise InvalidMessage("invalid", "NUL character in url or source")
    for name in ("title", "text"):
        try:
            (getattr(article, name) or "").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape ("\\udc00"): NER and the output cannot take it
            raise InvalidMessage("invalid", f"{name}: not valid Unicode (a lone surrogate)") from None
    return article


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all distinct (json.loads would silently keep the last of a repeated key)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return data


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259), though Python's parser takes them."""
    raise ValueError(f"{name} is not a JSON value")


def _describe(exc: ValidationError) -> str:
    """'published_at: Input should be a valid datetime; url: Field required' (first few problems)."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _nesting_depth(text: str) -> int:
    """Bracket depth outside strings: guards json.loads and pydantic against pathological nesting."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > _MAX_JSON_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest

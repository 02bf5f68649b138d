"""Message contracts: the one source of truth for what goes in and out of the worker.

The JSON Schemas in `schemas/` are generated from these models (`story-worker schemas --write`); a test fails
when the two drift. Bump a schema's version (the `*_SCHEMA_VERSION` constant in its `$id` and file name) when a
change breaks consumers.
"""
from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from worker.core.normalize import canonical_url

ARTICLE_SCHEMA_VERSION = 1
STORY_EVENT_SCHEMA_VERSION = 1
DEAD_LETTER_SCHEMA_VERSION = 1
DECISION_SCHEMA_VERSION = 1

_EARLIEST = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
_FUTURE_SLACK = dt.timedelta(days=2)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
# What the validators below accept, for producers that check against schemas/article.v1.json
_PUBLISHED_AT_SCHEMA = {"anyOf": [
    {"type": "string", "pattern": r"^\s*$|^\s*(\d{4}|([A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d)",
     "description": "ISO 8601 date-time (no offset: UTC) or date (midnight UTC), RFC 2822 as in RSS, or empty"},
    {"type": "number", "description": "Unix time in seconds (or milliseconds)"},
    {"type": "null"}]}
_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")  # "2013-05-02"; a string of ten digits is Unix seconds
_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f/?#]+[^\x00-\x20\x7f]*$"
_OUTPUT = ConfigDict(json_schema_serialization_defaults_required=True)  # the worker writes every field


class Article(BaseModel):
    """A raw scraped article as published by the scrapers on the input topic (unknown fields tolerated)."""

    model_config = ConfigDict(extra="allow",
                              json_schema_extra={"$id": f"story-worker/article.v{ARTICLE_SCHEMA_VERSION}.json"})

    url: str = Field(min_length=1, max_length=4096, json_schema_extra={"pattern": _URL_PATTERN},
                     description="Absolute http(s) URL as scraped; canonicalised by the worker.")
    title: str = Field(max_length=2000, description="Headline.")
    source: str = Field(min_length=1, max_length=512, json_schema_extra={"pattern": r"\S"},
                        description="Outlet or feed the scraper read it from.")
    published_at: Annotated[dt.datetime | None, WithJsonSchema(_PUBLISHED_AT_SCHEMA)] = Field(
        default=None, description="ISO 8601 timestamp (a bare date means midnight UTC) or RFC 2822 as in RSS. Missing, "
                                  "empty or implausible: the broker timestamp (live) or the previous article's "
                                  "time (batch) stands in.")
    id: str | None = Field(default=None, min_length=1, max_length=512, json_schema_extra={"pattern": r"\S"},
                           description="Upstream id; derived from canonical URL and content when absent.")
    text: str | None = Field(default=None, description="Body text; null or empty for headline-only items.")
    language: str | None = Field(default=None, max_length=32, description="ISO 639-1 code when known.")

    @field_validator("published_at", mode="before")
    @classmethod
    def _date_forms(cls, value: Any) -> Any:
        """ISO 8601 (a bare date: midnight UTC), RFC 2822 as RSS feeds write it ("Thu, 02 May 2013 10:00:00
        GMT"); an empty string is a missing date. Anything else is invalid, with the field named."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if _BARE_DATE.match(value):
            return value + "T00:00:00Z"
        if not value[:4].isdigit():  # not ISO: RFC 2822 or nothing
            try:
                return email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError, OverflowError):  # a year or offset too large for C
                return value
        return value

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or _UNSAFE.search(value):
            raise ValueError("expected an absolute http(s) URL with a host, without spaces or control characters")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise ValueError("the URL's port is not a number from 0 to 65535") from None
        try:  # the canonical form is read again downstream (fingerprints): it must parse as a URL itself
            canonical_url(canonical_url(value))
        except ValueError:
            raise ValueError("the URL's host is no host name once normalised (IDNA)") from None
        return value

    @field_validator("url", "source", "id", "language", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        """Identifiers lose surrounding whitespace; `title` and `text` stay as given (entity offsets point
        into them)."""
        return value.strip() if isinstance(value, str) else value

    @field_validator("text")
    @classmethod
    def _empty_is_absent(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @property
    def lang(self) -> str | None:
        """Language code from `language`, or the `lang` some feeds send instead."""
        extra = (self.model_extra or {}).get("lang")
        return self.language or (extra if isinstance(extra, str) else None)

    def plausible_time(self, now: dt.datetime) -> bool:
        """False when missing, before 1990 or more than two days after `now` (clock errors, placeholders)."""
        return self.published_at is not None and plausible(self.published_at.timestamp(), now)


def plausible(seconds: float, now: dt.datetime) -> bool:
    """An event time (epoch seconds) worth trusting: from 1990 to two days after `now`. A time beyond that would
    move the clocks that only go forward (the dedup window, story closing) past every real article."""
    return _EARLIEST.timestamp() <= seconds <= (now + _FUTURE_SLACK).timestamp()


class EntityOut(BaseModel):
    """A named entity with offsets into the field it was found in, as given."""

    text: str
    label: str = Field(description="The model's own label (OntoNotes: PERSON, ORG, GPE, LOC, FAC, NORP, ...).")
    start: int
    end: int
    canonical: str = Field(description="Canonical form within the article ('Putin' -> 'Vladimir Putin').")
    field: Literal["text", "title"]


class ArticleRef(BaseModel):
    """The article that caused a story event."""

    model_config = _OUTPUT

    id: str
    url: str
    source: str
    title: str
    published_at: dt.datetime | None
    entities: list[EntityOut] = Field(default_factory=list)
    duplicate_of: str | None = None
    duplicate_kind: Literal["exact_url", "exact_content", "near_copy", "rewrite"] | None = None
    similarity: float | None = None
    matched: dict[str, Any] | None = Field(default=None, description="Why it is a duplicate: what it matched.")
    update_of: str | None = None
    entities_truncated: bool = Field(default=False, description="Only the first entities fitted in the event "
                                     "(SW_EVENT_MAX_BYTES); the batch decision keeps them all.")


class TopEntity(BaseModel):
    canonical: str
    label: str
    count: int


class StoryState(BaseModel):
    """The story as it stands after the event."""

    model_config = _OUTPUT

    headline: str
    article_count: int = Field(description="Distinct (non-duplicate) articles.")
    copies: int = Field(default=0, description="Duplicates seen (not counted in article_count).")
    sources: list[str] = Field(description="Outlets by reports carried, most first (at most 64 kept per story).")
    top_entities: list[TopEntity]
    first_seen: dt.datetime
    last_seen: dt.datetime
    closed: bool = Field(default=False, description="The story left the active window (story_closed): no new "
                         "article joins it; a late copy or update of one of its articles still changes it, and "
                         "the events of those changes, of higher versions, say closed too.")


class StoryEvent(BaseModel):
    """Published to the story topic with message key = story_id. Keep the highest `version` per story."""

    model_config = ConfigDict(json_schema_extra={"$id": f"story-worker/story_event.v{STORY_EVENT_SCHEMA_VERSION}.json"},
                              **_OUTPUT)

    schema_version: Literal[1] = STORY_EVENT_SCHEMA_VERSION
    story_id: str
    version: int = Field(ge=1, description="Grows by one with every change of this story.")
    event: Literal["created", "article_added", "duplicate_seen", "article_updated", "story_closed"]
    article: ArticleRef | None = Field(description="The article that caused the event (null for story_closed).")
    score: float | None = Field(default=None, description="Similarity of the article to the chosen story.")
    runner_up: dict[str, Any] | None = Field(default=None, description=(
        "The best candidate story not chosen and its score: the second best for article_added, the best (below "
        "the join threshold) for created."))
    shared_entities: list[str] = Field(default_factory=list)
    story: StoryState
    worker_version: str
    emitted_at: dt.datetime

    def fitted(self, max_bytes: int) -> "StoryEvent":
        """The event within `max_bytes` of UTF-8 JSON (what the story topic accepts). Every field but the
        article's entities is bounded by the input limits, and a name-dense text can carry tens of thousands of
        mentions: the last ones are left out until it fits. An event the broker refuses would stall its batch."""
        over = len(self.model_dump_json().encode()) - max_bytes
        if over <= 0 or self.article is None:
            return self
        entities = self.article.entities
        keep = len(entities)
        while keep and over > 0:
            keep -= 1
            over -= len(entities[keep].model_dump_json().encode()) + 1   # and its comma
        article = self.article.model_copy(update={"entities": entities[:keep], "entities_truncated": True})
        return self.model_copy(update={"article": article})


class SourceRecord(BaseModel):
    """Where a dead-lettered message came from."""

    model_config = _OUTPUT

    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None = Field(description="Broker timestamp, ms since epoch.")
    key_b64: str | None = None
    headers: list[tuple[str, str]] = Field(default_factory=list, description="Header name and base64 value.")


class DeadLetter(BaseModel):
    """Published to the dead-letter topic for input that can never succeed."""

    model_config = ConfigDict(json_schema_extra={"$id": f"story-worker/dead_letter.v{DEAD_LETTER_SCHEMA_VERSION}.json"},
                              **_OUTPUT)

    schema_version: Literal[1] = DEAD_LETTER_SCHEMA_VERSION
    error_class: str = Field(description="Machine-readable class: not_utf8, not_json, invalid, oversize, processing, "
                             "unreadable (the client could not decode the record, or one before it in its record "
                             "batch: no bytes kept).")
    reason: str = Field(description="Readable reason.")
    source: SourceRecord
    value_b64: str = Field(description="The original bytes, base64 (possibly truncated: see value_truncated).")
    value_length: int
    value_sha256: str
    value_truncated: bool = False
    worker_version: str
    failed_at: dt.datetime

    @classmethod
    def build(cls, value: bytes, *, error_class: str, reason: str, source: SourceRecord, worker_version: str,
              max_bytes: int) -> "DeadLetter":
        """The whole original when the dead letter stays within `max_bytes` (what the dead-letter topic accepts:
        the letter's UTF-8 JSON plus the original's key, which the letter is published under), else as much of
        its head as fits, with its full length and SHA-256. Should the original's key and headers alone overflow
        it, they are left out (the reason says so): a letter the broker refuses would stall its batch."""
        letter = cls(error_class=error_class, reason=reason[:2000], source=source, value_b64="",
                     value_length=len(value), value_sha256=hashlib.sha256(value).hexdigest(), value_truncated=False,
                     worker_version=worker_version, failed_at=dt.datetime.now(dt.timezone.utc))
        if letter.size() > max_bytes and (source.headers or source.key_b64):
            letter = letter.model_copy(update={
                "source": source.model_copy(update={"headers": [], "key_b64": None}),
                "reason": f"{letter.reason} [key and headers of the original left out: too large]"})
        room = max_bytes - letter.size()       # for the base64 of the kept bytes
        kept = value[:max(0, room) // 4 * 3]
        return letter.model_copy(update={"value_b64": base64.b64encode(kept).decode("ascii"),
                                         "value_truncated": len(kept) < len(value)})

    def key(self) -> bytes | None:
        """The record key the letter is published under: the original's, as it came (none when left out)."""
        return base64.b64decode(self.source.key_b64) if self.source.key_b64 is not None else None

    def size(self) -> int:
        """Bytes of the record the letter makes: its UTF-8 JSON and its key."""
        return len(self.model_dump_json().encode()) + len(self.key() or b"")


class Decision(BaseModel):
    """One batch-mode output line per input line (what ../shared/tools/score.py reads)."""

    model_config = ConfigDict(json_schema_extra={"$id": f"story-worker/decision.v{DECISION_SCHEMA_VERSION}.json"})

    id: str | None
    story_id: str | None = None
    duplicate_of: str | None = None
    duplicate_kind: str | None = None
    similarity: float | None = None
    story_score: float | None = None
    update_of: str | None = None
    entities: list[EntityOut] = Field(default_factory=list)
    error: str | None = None


SCHEMAS: dict[str, type[BaseModel]] = {
    f"article.v{ARTICLE_SCHEMA_VERSION}.json": Article,
    f"story_event.v{STORY_EVENT_SCHEMA_VERSION}.json": StoryEvent,
    f"dead_letter.v{DEAD_LETTER_SCHEMA_VERSION}.json": DeadLetter,
    f"decision.v{DECISION_SCHEMA_VERSION}.json": Decision,
}

import json

import pytest

from worker.errors import InvalidMessage
from worker.validation import parse_article

GOOD = {"url": "https://example.org/a", "title": "T", "source": "s", "published_at": "2026-05-14"}


def parse(value: bytes):
    return parse_article(value, max_bytes=10_000, max_text_chars=1_000)


def test_valid_article_with_bare_date_and_unknown_fields():
    article = parse(json.dumps({**GOOD, "lang": "en", "text": "", "extra": {"x": 1}}).encode())
    assert article.published_at.isoformat() == "2026-05-14T00:00:00+00:00"
    assert article.text is None and article.lang == "en" and article.id is None


@pytest.mark.parametrize("value, error_class", [
    (b"\xff\xfe\x00", "not_utf8"),
    (b"{not json", "not_json"),
    (b"[1, 2]", "invalid"),
    (json.dumps({**GOOD, "title": 5}).encode(), "invalid"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "url"}).encode(), "invalid"),
    (json.dumps({**GOOD, "published_at": "yesterday"}).encode(), "invalid"),
    (json.dumps({**GOOD, "url": "http://:80/x"}).encode(), "invalid"),
    (json.dumps({**GOOD, "url": "http://user@/y"}).encode(), "invalid"),
    (json.dumps({**GOOD, "url": "https://example.org:99999/a"}).encode(), "invalid"),
    (json.dumps({**GOOD, "url": "https://news\uff3b1.example/a"}).encode(), "invalid"),  # "[" once normalised
    (b"x" * 10_001, "oversize"),
    (json.dumps({**GOOD, "text": "y" * 1_001}).encode(), "oversize"),
    (b"[" * 5000 + b"]" * 5000, "invalid"),
    (None, "invalid"),
    (b'{"url": "https://example.org/a", "title": "A", "title": "B", "source": "s"}', "invalid"),
    (b'{"url": "https://example.org/a", "title": "A", "source": "s", "score": NaN}', "not_json"),
    (b'{"url": "https://example.org/a", "title": "A", "source": "s", "x": {"y": -Infinity}}', "not_json"),
    (b'{"url": "https://example.org/a", "title": "A", "source": "s", "text": "Mer\\udc00kel"}', "invalid"),
    (b'{"url": "https://example.org/a", "title": "\\ud800", "source": "s"}', "invalid"),
])
def test_invalid_messages_are_classified(value, error_class):
    with pytest.raises(InvalidMessage) as info:
        parse(value)
    assert info.value.error_class == error_class and info.value.reason


def test_title_and_text_stay_as_given_for_entity_offsets_and_identifiers_are_trimmed():
    article = parse(json.dumps({**GOOD, "title": " T ", "text": "\n  Barack Obama said.", "id": " a1 "}).encode())
    assert article.text == "\n  Barack Obama said." and article.title == " T " and article.id == "a1"
    assert parse(json.dumps({**GOOD, "text": " \n "}).encode()).text is None


@pytest.mark.parametrize("value, expected", [
    ("Thu, 02 May 2013 10:00:00 GMT", "2013-05-02T10:00:00+00:00"),
    ("Thu, 02 May 2013 12:00:00 +0200", "2013-05-02T12:00:00+02:00"),
    ("2013-05-02T10:00:00Z", "2013-05-02T10:00:00+00:00"),
    ("1367488800", "2013-05-02T10:00:00+00:00"),      # Unix seconds as a string (ten digits, not a bare date)
    ("1367488800000", "2013-05-02T10:00:00+00:00"),   # and milliseconds
    ("", None),
])
def test_rss_dates_are_read_and_an_empty_date_is_missing(value, expected):
    article = parse(json.dumps({**GOOD, "published_at": value}).encode())
    assert (article.published_at.isoformat() if article.published_at else None) == expected


@pytest.mark.parametrize("value", [
    "Thu, 02 May 99999999999999999999 10:00:00 GMT",
    "Thu, 02 May 2013 99999999999999999999:00:00 GMT",
    "Thu, 02 May 2013 10:00:00 +99999999999999999999",
])
def test_an_rss_date_with_numbers_too_large_is_invalid_not_an_overflow(value):
    with pytest.raises(InvalidMessage, match="published_at") as info:
        parse(json.dumps({**GOOD, "published_at": value}).encode())
    assert info.value.error_class == "invalid"


def test_a_repeated_key_is_named_and_a_lone_surrogate_names_its_field():
    with pytest.raises(InvalidMessage, match="duplicate key 'title'"):
        parse(b'{"url": "https://example.org/a", "title": "A", "title": "B", "source": "s"}')
    with pytest.raises(InvalidMessage, match="text: not valid Unicode"):
        parse(b'{"url": "https://example.org/a", "title": "A", "source": "s", "text": "Mer\\udc00kel"}')


def test_reason_names_the_field():
    with pytest.raises(InvalidMessage, match="published_at"):
        parse(json.dumps({**GOOD, "published_at": "not a date"}).encode())


def test_the_id_of_a_rejected_message_is_not_looked_for_past_the_size_limit():
    from worker.pipeline import _guess_id

    small = json.dumps({"id": "a1", "title": 5}).encode()
    padded = json.dumps({"id": "a1", "pad": [{}] * 2_000}).encode()   # what a compressed record can expand to
    assert _guess_id(small, 1_024) == "a1"
    assert len(padded) > 1_024 and _guess_id(padded, 1_024) is None and _guess_id(padded, len(padded)) == "a1"

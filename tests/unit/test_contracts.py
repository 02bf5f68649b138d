"""The models are the source of truth; schemas/ must match them, and settings never leak secrets."""
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.models import DeadLetter, SourceRecord
from worker.schema_export import check_schemas, render
from worker.settings import Settings, redact_url

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_files_match_models():
    assert check_schemas(SCHEMAS) == [], "run `story-worker schemas --write` and commit schemas/"


GOOD_ARTICLE = {"url": "https://news.example/a", "title": "Quake", "source": "wire"}


@pytest.mark.parametrize("change", [
    {}, {"published_at": "2013-05-02T10:00:00Z"}, {"published_at": "2013-05-02T10:00:00"},
    {"published_at": "2013-05-02"}, {"published_at": "Thu, 02 May 2013 10:00:00 GMT"},
    {"published_at": "02 May 2013 10:00 +0200"}, {"published_at": ""}, {"published_at": None},
    {"published_at": 1700000000}, {"published_at": "yesterday"}, {"published_at": True} | {"x": 1},
    {"url": "HTTPS://news.example/b?q=1#f"}, {"url": "ftp://news.example/a"}, {"url": "https://news.example/a b"},
    {"url": "https:///path"}, {"url": "news.example/a"}, {"id": "  "}, {"id": "a-1"}, {"id": ""},
    {"source": " "}, {"title": "t" * 2001}, {"language": "en", "lang": "en", "unknown": [1]}, {"text": None},
    {"url": None}, {"title": 5},
])
def test_the_article_schema_accepts_what_the_worker_accepts(change):
    """Producers may check their messages against schemas/article.v1.json before sending: it must agree with
    the worker's own validation (RSS dates, Unix times, http(s) URLs only, blank ids)."""
    import jsonschema

    from worker.errors import InvalidMessage
    from worker.validation import parse_article

    doc = {**GOOD_ARTICLE, **change}
    schema = json.loads((SCHEMAS / "article.v1.json").read_text())
    by_schema = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(doc)
    try:
        parse_article(json.dumps(doc).encode(), max_bytes=100_000, max_text_chars=10_000)
        by_worker = True
    except InvalidMessage:
        by_worker = False
    assert by_schema == by_worker, (doc, by_schema, by_worker)


def test_what_the_worker_writes_matches_its_output_schemas():
    """A story event and a dead letter, as published, validate against schemas/ with every field required that
    the worker always writes."""
    import datetime as dt

    import jsonschema

    from worker.models import ArticleRef, EntityOut, StoryEvent, StoryState

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    ref = ArticleRef(id="a", url="https://x.example/a", source="x", title="t", published_at=None,
                     entities=[EntityOut(text="X", label="ORG", start=0, end=1, canonical="X", field="title")])
    story = StoryState(headline="t", article_count=1, sources=["x"], top_entities=[], first_seen=now, last_seen=now)
    event = StoryEvent(story_id="s", version=1, event="created", article=ref, story=story, worker_version="x",
                       emitted_at=now)
    letter = DeadLetter.build(b"{", error_class="not_json", reason="bad", worker_version="x", max_bytes=10_000,
                              source=SourceRecord(topic="t", partition=0, offset=1, timestamp=None))
    for name, model in (("story_event.v1.json", event), ("dead_letter.v1.json", letter)):
        schema = json.loads((SCHEMAS / name).read_text())
        written = json.loads(model.model_dump_json())
        jsonschema.validate(written, schema, format_checker=jsonschema.FormatChecker())
        del written["schema_version"]
        assert not jsonschema.Draft202012Validator(schema).is_valid(written)  # always written, so required


def test_check_schemas_notices_drift(tmp_path):
    (tmp_path / "article.v1.json").write_text(render("article.v1.json").replace("Headline", "Title"))
    assert "article.v1.json" in check_schemas(tmp_path)


def test_dead_letter_keeps_what_fits_its_size_with_length_and_hash_of_the_original():
    src = SourceRecord(topic="t", partition=1, offset=2, timestamp=3, headers=[("trace", "eHl6" * 500)])
    small = DeadLetter.build(b"{oops", error_class="not_json", reason="bad", source=src, worker_version="x",
                             max_bytes=10_000)
    assert base64.b64decode(small.value_b64) == b"{oops" and not small.value_truncated
    value = bytes(range(256)) * 40
    letter = DeadLetter.build(value, error_class="oversize", reason="too big", source=src, worker_version="x",
                              max_bytes=8192)
    encoded = letter.model_dump_json().encode()
    assert 8192 - 5 <= len(encoded) <= 8192   # as much as fits, in whole base64 quanta
    kept = base64.b64decode(letter.value_b64)
    assert letter.value_truncated and value.startswith(kept) and 0 < len(kept) < len(value)
    assert letter.value_length == len(value) and letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert json.loads(encoded)["source"]["offset"] == 2


def test_a_dead_letter_leaves_out_key_and_headers_that_alone_would_overflow_it():
    src = SourceRecord(topic="t", partition=1, offset=2, timestamp=3, key_b64="a2V5",
                       headers=[("trace", "eHl6" * 5000)])
    letter = DeadLetter.build(b"{oops", error_class="not_json", reason="bad", source=src, worker_version="x",
                              max_bytes=8192)
    assert len(letter.model_dump_json().encode()) <= 8192
    assert letter.source.headers == [] and letter.source.key_b64 is None and "left out" in letter.reason
    assert base64.b64decode(letter.value_b64) == b"{oops" and letter.source.offset == 2


def test_a_dead_letter_counts_its_bytes_not_its_characters_and_the_key_it_is_published_under():
    """The broker measures the record: the letter's UTF-8 JSON (a non-ASCII reason or header name takes two or
    three bytes a character) and the original's key, which the letter is published under."""
    key = os.urandom(3000)
    src = SourceRecord(topic="t", partition=0, offset=9, timestamp=None, key_b64=base64.b64encode(key).decode(),
                       headers=[("é" * 500, "eHl6")])
    value = os.urandom(40_000)
    letter = DeadLetter.build(value, error_class="not_utf8", reason="ünlesbar " * 200, source=src,
                              worker_version="x", max_bytes=20_000)
    assert letter.key() == key and letter.source.headers == src.headers   # both fit, so both are kept
    record = len(letter.model_dump_json().encode()) + len(key)
    assert 20_000 - 5 <= record <= 20_000 and letter.size() == record
    assert letter.value_truncated and value.startswith(base64.b64decode(letter.value_b64))


def test_an_empty_key_is_kept_as_an_empty_key():
    src = SourceRecord(topic="t", partition=0, offset=1, timestamp=None, key_b64="")
    letter = DeadLetter.build(b"{", error_class="not_json", reason="bad", source=src, worker_version="x",
                              max_bytes=10_000)
    assert letter.key() == b""


def test_a_story_event_leaves_out_the_entities_that_do_not_fit_its_size():
    """A name-dense text gives tens of thousands of mentions; the event keeps the first that fit and says so."""
    import datetime as dt

    from worker.models import ArticleRef, EntityOut, StoryEvent, StoryState

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    entities = [EntityOut(text=f"Name{i}", label="ORG", start=7 * i, end=7 * i + 5, canonical=f"Name{i}",
                          field="text") for i in range(20_000)]
    ref = ArticleRef(id="a", url="https://x.example/a", source="x", title="t", published_at=now, entities=entities)
    story = StoryState(headline="t", article_count=1, sources=["x"], top_entities=[], first_seen=now, last_seen=now)
    event = StoryEvent(story_id="s", version=1, event="created", article=ref, story=story, worker_version="x",
                       emitted_at=now)
    assert len(event.model_dump_json().encode()) > 1_000_000
    fitted = event.fitted(1_000_000)
    assert 1_000_000 - 200 < len(fitted.model_dump_json().encode()) <= 1_000_000
    assert fitted.article.entities_truncated and fitted.article.entities == entities[:len(fitted.article.entities)]
    assert event.fitted(10_000_000) is event and not event.article.entities_truncated


def test_settings_redact_secrets(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://user:s3cr3t-pw@redis:6379/0")
    monkeypatch.setenv("SW_KAFKA_SASL_PASSWORD", "kafka-s3cr3t")
    monkeypatch.setenv("SW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SW_KAFKA_SASL_USERNAME", "worker")
    settings = Settings()
    dumped = json.dumps(settings.redacted())
    assert "s3cr3t" not in dumped and "redis://user:***@redis:6379/0" in dumped
    assert settings.kafka_common()["sasl_plain_password"] == "kafka-s3cr3t"


def test_redact_url_without_password_is_unchanged():
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://h/0?db=2&flag") == "redis://h/0?db=2&flag"


def test_redact_url_masks_a_password_given_as_a_query_parameter():
    """redis-py reads `?password=` too."""
    assert redact_url("redis://h:6379/0?password=s3cr3t&db=2") == "redis://h:6379/0?password=***&db=2"
    assert redact_url("rediss://u:pw@h/0?password=s3cr3t") == "rediss://u:***@h/0?password=***"


def test_tls_files_must_exist_at_start_and_reach_the_clients_as_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("SW_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("SW_KAFKA_SSL_CAFILE", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ValidationError, match="kafka_ssl_cafile"):
        Settings()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SW_KAFKA_SSL_CAFILE", str(ca))
    monkeypatch.setenv("SW_REDIS_SSL_CA_CERTS", str(ca))
    settings = Settings()
    assert settings.kafka_common()["ssl_cafile"] == str(ca)
    assert settings.redacted()["redis_ssl_ca_certs"] == str(ca)
    result = subprocess.run([sys.executable, "-m", "worker.cli", "check"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SW_REDIS_SSL_CA_CERTS": str(tmp_path / "gone.pem")})
    assert result.returncode == 2 and "SW_REDIS_SSL_CA_CERTS: Path does not point to a file" in result.stderr, \
        result.stderr


@pytest.mark.parametrize("env, named", [
    ({"SW_HEARTBEAT_INTERVAL_MS": "50000"}, "SW_HEARTBEAT_INTERVAL_MS must be below SW_SESSION_TIMEOUT_MS"),
    ({"REDIS_URL": "redis://:s3cr3t@127.0.0.1:abc/0"}, "REDIS_URL: Value error, not a Redis URL"),
    ({"REDIS_URL": "redis://:s3cr3t@127.0.0.1:99999/0"}, "REDIS_URL: Value error, not a Redis URL"),
    ({"SW_HEARTBEAT_FILE": ""}, "SW_HEARTBEAT_FILE:"),
    ({"SW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SW_KAFKA_SASL_MECHANISM": "PLAIN",
      "SW_KAFKA_SASL_PASSWORD": "s3cr3t"}, "needs SW_KAFKA_SASL_MECHANISM, SW_KAFKA_SASL_USERNAME"),
    ({"SW_DEDUP_WINDOW_S": "inf"}, "SW_DEDUP_WINDOW_S:"),
    ({"SW_STORY_WINDOW_S": "1e16"}, "SW_STORY_WINDOW_S:"),
])
def test_settings_that_would_fail_later_in_a_client_exit_2_at_start(env, named):
    """A heartbeat the Kafka client refuses, a port redis-py cannot read, an empty heartbeat path, SASL without
    credentials, a window whose TTL Redis refuses (or Python cannot make an integer): each used to end a started
    worker with a traceback, look like an unreachable broker, or fail every batch as a Redis outage."""
    result = subprocess.run([sys.executable, "-m", "worker.cli", "check"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 2 and named in result.stderr, result.stderr
    assert "s3cr3t" not in result.stderr


def test_a_bad_setting_exits_2_naming_its_variable_and_never_echoing_a_value():
    env = {**os.environ, "REDIS_URL": "user:s3cr3t@redis.example:6379", "SW_MAX_BATCH": "abc"}
    result = subprocess.run([sys.executable, "-m", "worker.cli", "check"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 2, result.stderr
    assert "REDIS_URL: Value error, expected redis://" in result.stderr and "SW_MAX_BATCH:" in result.stderr
    assert "s3cr3t" not in result.stderr and "abc" not in result.stderr

"""The models are the source of truth; schemas/ must match them, and settings never leak secrets."""
import json
from pathlib import Path

from worker.models import DeadLetter, SourceRecord
from worker.schema_export import check_schemas, render
from worker.settings import Settings, redact_url

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_files_match_models():
    assert check_schemas(SCHEMAS) == [], "run `story-worker schemas --write` and commit schemas/"


def test_check_schemas_notices_drift(tmp_path):
    (tmp_path / "article.v1.json").write_text(render("article.v1.json").replace("Headline", "Title"))
    assert "article.v1.json" in check_schemas(tmp_path)


def test_dead_letter_keeps_head_length_and_hash_of_large_input():
    src = SourceRecord(topic="t", partition=1, offset=2, timestamp=3)
    letter = DeadLetter.build(b"a" * 5000, error_class="oversize", reason="too big", source=src,
                              worker_version="x", keep_bytes=1024)
    assert letter.value_truncated and letter.value_length == 5000 and len(letter.value_sha256) == 64
    assert json.loads(letter.model_dump_json())["source"]["offset"] == 2


def test_settings_redact_secrets(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://user:s3cr3t-pw@redis:6379/0")
    monkeypatch.setenv("SW_KAFKA_SASL_PASSWORD", "kafka-s3cr3t")
    monkeypatch.setenv("SW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    settings = Settings()
    dumped = json.dumps(settings.redacted())
    assert "s3cr3t" not in dumped and "redis://user:***@redis:6379/0" in dumped
    assert settings.kafka_common()["sasl_plain_password"] == "kafka-s3cr3t"


def test_redact_url_without_password_is_unchanged():
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

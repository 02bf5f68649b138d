"""The demo: sample articles streamed through real worker processes, the resulting stories printed."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from .devstack import DevStack
from .errors import InvalidMessage
from .models import Article
from .pipeline import article_id
from .settings import Settings, redact_url
from .validation import parse_article

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "articles.jsonl"
MALFORMED = [b"this is not json", b'{"url": "https://example.org/x", "title": 42}', b"\xff\xfe not utf-8"]


def run_demo(input_path: Path | None, workers: int, settings: Settings) -> int:
    path = input_path or SAMPLES
    if not path.is_file():  # an installed package: the samples ship with the source checkout, not the wheel
        raise click.UsageError(f"no sample articles at {path} (they come with the source checkout); "
                               "pass --input FILE (JSON Lines articles)")
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    articles = [_parsed(line, settings) for line in lines]   # None: invalid, a dead letter to expect
    ids = {article_id(a) for a in articles if a is not None}
    invalid = len(lines) - sum(a is not None for a in articles) + len(MALFORMED)
    click.secho(f"story-worker demo: {len(ids)} articles from {path.name} + {invalid} malformed messages", bold=True)
    started = time.monotonic()
    with DevStack(keep_files=False) as stack:
        click.echo(f"broker {stack.settings.kafka_bootstrap_servers}, Redis {redact_url(stack.env['REDIS_URL'])}, "
                   f"{workers} worker process(es) in group {stack.settings.consumer_group}")
        procs = [stack.start_worker() for _ in range(workers)]
        for proc in procs:
            stack.wait_logged(proc, "partitions_assigned")
        click.echo("streaming the articles in order of publication, each once the one before is decided (as a "
                   "live feed brings them), then the malformed messages")
        _stream(stack, [(line, a) for line, a in zip(lines, articles) if a is not None])
        stack.produce([line for line, a in zip(lines, articles) if a is None] + MALFORMED)
        events, letters = stack.wait_accounted(ids, dead=invalid)
        codes = [proc.terminate() for proc in procs]
    letters = list({_source(d): d for d in letters}.values())  # a letter sent again (a retry) shown once
    _print_stories(events)
    _print_dead_letters(letters)
    seen = {e["article"]["id"] for e in events if e.get("article")}
    missing = ids - seen
    click.echo(f"\n{len(seen & ids)}/{len(ids)} articles decided, {len(letters)} dead letters, "
               f"workers exited {codes}, {time.monotonic() - started:.0f}s")
    if missing:
        click.secho(f"missing decisions for: {sorted(missing)}", fg="red")
    return 0 if not missing and len(letters) == invalid and all(c == 0 for c in codes) else 1


def _stream(stack: DevStack, articles: list[tuple[bytes, Article]], timeout: float = 60.0) -> None:
    """The articles (keyed by URL, as `story-worker produce` keys them) by publication time, each slice once the
    story events of the slice before are out: one article at a time up to 100 (what is decided then does not
    depend on which worker reads what first), at most 100 slices for a longer input."""
    def published(item: tuple[bytes, Article]) -> float:
        return item[1].published_at.timestamp() if item[1].published_at else float("-inf")

    ordered = sorted(articles, key=published)
    size = -(-len(ordered) // 100)
    topic = stack.settings.output_topic
    reader = KafkaConsumer(**stack.settings.kafka_common(), enable_auto_commit=False)
    producer = KafkaProducer(**stack.settings.kafka_common(), acks="all", linger_ms=0,
                             max_request_size=8 * 1024 * 1024)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        if not parts:
            raise click.ClickException(f"the story topic {topic} has no partitions the broker reports")
        reader.assign(parts)
        reader.seek_to_beginning(*parts)   # not "latest", resolved at the first poll: an event may come before it
        decided: set[str] = set()
        for start in range(0, len(ordered), size):
            chunk = ordered[start:start + size]
            sent = [producer.send(stack.settings.input_topic, key=article.url.encode(), value=line)
                    for line, article in chunk]
            for future in sent:
                future.get(timeout=30)   # a record the broker refused fails here, not as an article "missing"
            wanted = {article_id(article) for _, article in chunk}
            deadline = time.monotonic() + timeout
            while not wanted <= decided and time.monotonic() < deadline:
                for records in reader.poll(timeout_ms=200).values():
                    decided.update(a["id"] for a in (json.loads(r.value).get("article") for r in records) if a)
            if not wanted <= decided:
                click.secho(f"no story event within {timeout:.0f}s for {sorted(wanted - decided)}; going on",
                            fg="yellow")
    finally:
        producer.close(5)
        reader.close()


def _source(letter: dict) -> tuple:
    return letter["source"]["topic"], letter["source"]["partition"], letter["source"]["offset"]


def _parsed(line: bytes, settings: Settings) -> Article | None:
    """The article a line holds, validated as the workers will (they read the same settings); None if invalid."""
    try:
        return parse_article(line, max_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars)
    except InvalidMessage:
        return None


def _print_stories(events: list[dict]) -> None:
    latest: dict[str, dict] = {}
    members: dict[str, list[dict]] = {}
    for e in sorted(events, key=lambda e: e["version"]):
        latest[e["story_id"]] = e
        if e.get("article"):
            members.setdefault(e["story_id"], []).append(e)
    for story_id, e in sorted(latest.items(), key=lambda kv: kv[1]["story"]["first_seen"]):
        s = e["story"]
        click.secho(f"\n■ {s['headline']}", bold=True, fg="cyan")
        click.echo(f"  story {story_id} v{e['version']}: {s['article_count']} article(s), {s['copies']} copies, "
                   f"sources: {', '.join(s['sources'])}")
        click.echo("  entities: " + ", ".join(f"{t['canonical']} ({t['label']})" for t in s["top_entities"][:8]))
        for m in members.get(story_id, []):
            a = m["article"]
            why = {"created": "first report", "article_added": f"joined, score {m.get('score')}",
                   "article_updated": f"update of {a.get('update_of')}",
                   "duplicate_seen": f"{a.get('duplicate_kind')} of {a.get('duplicate_of')}, "
                                     f"similarity {a.get('similarity')}"}.get(m["event"], m["event"])
            click.echo(f"    - [{a['source']}] {a['title'][:90]}  ({why})")


def _print_dead_letters(letters: list[dict]) -> None:
    if letters:
        click.secho("\nDead letters:", bold=True, fg="yellow")
    for d in letters:
        click.echo(f"  - {d['error_class']}: {d['reason'][:110]} (offset {d['source']['offset']})")

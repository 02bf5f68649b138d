"""The README's main command, `story-worker demo`: real worker processes, the sample articles, the stories shown."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import click
import pytest

import worker.demo
from worker.adapters.local_services import port_open
from worker.demo import run_demo
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_the_demo_streams_the_samples_through_real_workers_and_prints_their_stories(services, tmp_path: Path):
    env = {**os.environ, "SW_KAFKA_BOOTSTRAP_SERVERS": services["kafka"], "REDIS_URL": services["redis"]}
    batch = tmp_path / "batch.jsonl"   # batch mode's decisions on the samples, for comparison
    subprocess.run([sys.executable, "-m", "worker.cli", "batch", "--input", str(worker.demo.SAMPLES), "--output",
                    str(batch)], env=env, capture_output=True, check=True, timeout=300)
    decisions = [json.loads(line) for line in batch.read_text().splitlines()]
    done = subprocess.run([sys.executable, "-m", "worker.cli", "demo"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"16/16 articles decided, 3 dead letters, workers exited \[0, 0\]", done.stdout), done.stdout
    headlines = [line for line in done.stdout.splitlines() if line.startswith("■ ")]
    # Eight events in the samples; the two earthquakes (Abruzzo, Peru) stay two stories. The French report of the
    # Rotterdam strike (no NER for it, and no word in common with the English reports' titles) starts a story of
    # its own, as in batch mode: streamed one at a time in order of publication, the workers decide as batch
    # mode does, whichever of them reads which partition.
    assert len(headlines) == len({d["story_id"] for d in decisions}) == 9, headlines
    assert sum("les dockers" in h for h in headlines) == 1 and sum("quake" in h.lower() for h in headlines) == 2
    assert "(near_copy of sample-01, similarity 1.0)" in done.stdout
    for d in decisions:   # every join as batch mode made it, score and all
        assert d["story_score"] is None or f"(joined, score {d['story_score']})" in done.stdout, d
    assert done.stdout.count("(first report)") == len(headlines)
    assert "not_json" in done.stdout and "not_utf8" in done.stdout and "invalid" in done.stdout


def test_without_samples_the_demo_asks_for_input_before_starting_anything(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(worker.demo, "SAMPLES", tmp_path / "absent.jsonl")  # an installed wheel has none
    with pytest.raises(click.UsageError, match="--input"):
        run_demo(None, workers=1, settings=Settings())


def test_the_demo_takes_articles_without_ids_and_counts_invalid_lines_as_dead_letters(services, tmp_path: Path):
    """`--input FILE` of articles as scrapers send them: no `id` (derived, as the worker derives it), and a line
    that is no article, which the workers dead-letter beside the demo's own three malformed messages."""
    src = tmp_path / "mine.jsonl"
    src.write_text('{"url": "https://a.example/flood", "title": "Flood hits Lentham", "source": "a", '
                   '"text": "Flood waters rose in the river town of Lentham on Monday."}\n'
                   'not an article\n'
                   '{"url": "https://b.example/flood", "title": "Lentham under water", "source": "b", '
                   '"text": "The river town of Lentham was flooded on Monday, residents said."}\n')
    env = {**os.environ, "SW_KAFKA_BOOTSTRAP_SERVERS": services["kafka"], "REDIS_URL": services["redis"]}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--input", str(src), "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"2/2 articles decided, 4 dead letters, workers exited \[0\]", done.stdout), done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def _marked(marker: str) -> list[int]:
    """Pids of the processes whose environment carries `marker` (they inherit it from the demo)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc to find the demo's processes")
def test_a_demo_stopped_by_sigterm_leaves_no_process_behind(services):
    """Its workers and, with none configured, its own broker and Redis: nothing outlives it."""
    marker = f"SW_DEMO_TEST_MARK={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("SW_KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update(dict([marker.split("=")]), REDIS_URL="redis://127.0.0.1:1/0")  # no Redis there: it starts its own
    demo = subprocess.Popen([sys.executable, "-m", "worker.cli", "demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: queue.Queue = queue.Queue()  # read aside: a demo that stalls must fail the test, not hang it
    threading.Thread(target=lambda: [output.put(text) for text in demo.stdout] + [output.put("")], daemon=True).start()
    try:
        line = "-"
        while "worker process(es)" not in line:  # broker, Redis and workers started
            line = output.get(timeout=120)
            assert line, "the demo ended before starting its workers"
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)]  # its broker and its Redis
        assert len(ports) == 2 and all(port_open(p) for p in ports), line
        deadline = time.monotonic() + 60
        marked = _marked(marker)
        while len(marked) < 4 and time.monotonic() < deadline:  # the demo, tansu and two workers (redis-server
            time.sleep(0.2)                                    # rewrites its environment: it is found by port)
            marked = _marked(marker)
        assert len(marked) >= 4, marked
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(90)
        out = "".join(iter(lambda: output.get(timeout=10), ""))
        assert code == 128 + signal.SIGTERM, out[:3000] + "\n...\n" + out[-3000:]
        deadline = time.monotonic() + 30
        while (_marked(marker) or any(port_open(p) for p in ports)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked(marker) == [] and not any(port_open(p) for p in ports)
    finally:
        if demo.poll() is None:
            demo.kill()
        for pid in _marked(marker):
            os.kill(pid, signal.SIGKILL)


def test_the_stack_reads_a_topic_to_its_end_when_a_poll_ends_between_partitions(services):
    """A poll returns at most 500 records; when they end exactly where a partition does, the partitions whose
    fetch was not read yet have no known end. Counting that as read to its end returned 500 of 800 records, the
    same at every read: a scenario waiting for its events (`wait_accounted`) then timed out with articles missed."""
    from worker.devstack import DevStack

    sizes = [200, 300, 0, 300]
    stack = DevStack()
    try:
        stack.produce([b"{}"] * sum(sizes), partitions=[p for p, n in enumerate(sizes) for _ in range(n)])
        for _ in range(3):
            records = stack.read_topic(stack.settings.input_topic)
            assert sorted((r.partition, r.offset) for r in records) == [
                (p, o) for p, n in enumerate(sizes) for o in range(n)]
    finally:
        stack.close()

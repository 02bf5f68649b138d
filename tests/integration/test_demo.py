"""The README's main command, `story-worker demo`: real worker processes, the sample articles, the stories shown."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import worker.demo
from worker.demo import run_demo

pytestmark = pytest.mark.integration


def test_the_demo_streams_the_samples_through_real_workers_and_prints_their_stories(services):
    env = {**os.environ, "SW_KAFKA_BOOTSTRAP_SERVERS": services["kafka"], "REDIS_URL": services["redis"]}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "demo"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"16/16 articles decided, 3 dead letters, workers exited \[0, 0\]", done.stdout), done.stdout
    headlines = [line for line in done.stdout.splitlines() if line.startswith("■ ")]
    # Eight events in the samples; the two earthquakes (Abruzzo, Peru) stay two stories.
    assert len(headlines) == 8, headlines
    assert sum("quake" in h.lower() for h in headlines) == 2, headlines
    assert done.stdout.count("(first report)") == 8
    assert "not_json" in done.stdout and "not_utf8" in done.stdout and "invalid" in done.stdout


def test_without_samples_the_demo_asks_for_input_before_starting_anything(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(worker.demo, "SAMPLES", tmp_path / "absent.jsonl")  # an installed wheel has none
    with pytest.raises(click.UsageError, match="--input"):
        run_demo(None, workers=1)

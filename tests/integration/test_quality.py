"""Quality floors on the labelled data in ../shared (skipped where it is absent): batch mode, on a real Redis,
scored by ../shared/tools/score.py, as `make evaluate` does.

A floor is the figure last measured less a margin, so that a change costing quality fails here rather than in a
later evaluation; the issues' targets are beside them. GVA and CoNLL are left to `make evaluate` (about two
minutes more); these three sets take about a minute and a half.
"""
import importlib.util
import json
from pathlib import Path

import pytest

from worker.batch import run_batch
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.data]


@pytest.fixture(scope="module")
def score(request):
    """../shared/tools/score.py, imported as a module."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "score.py"
    if not path.is_file():
        pytest.skip(f"the scorer is not at {path} (clone with ../shared beside the repo)")
    spec = importlib.util.spec_from_file_location("shared_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decide(redis_client, source: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / "decisions.jsonl"
    run_batch(Settings(), redis_client, source, out)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("data_set, floor", [
    ("uci_news_aggregator_head", 0.80),   # measured 0.821; the target 0.75
    ("ecbplus_story_clusters", 0.80),     # measured 0.831; the target 0.90 is not met (see the notes)
])
def test_story_clustering_keeps_its_measured_bcubed_f1(score, shared_data, redis_client, tmp_path, data_set, floor):
    source = shared_data / data_set / "dev.jsonl"
    gold = score.read_jsonl(str(source))
    figures = score.score_stories(gold, decide(redis_client, source, tmp_path))
    assert figures["missing_predictions"] == 0 and figures["bcubed_f1"] >= floor, figures


def test_near_duplicates_keep_their_measured_precision_and_recall(score, shared_data, redis_client, tmp_path):
    folder = shared_data / "near_duplicates"
    figures = score.score_pairs(score.read_jsonl(str(folder / "pairs.jsonl")),
                                decide(redis_client, folder / "articles.jsonl", tmp_path))
    assert figures["missing_predictions"] == 0, figures
    assert figures["precision"] >= 0.99 and figures["recall"] >= 0.99, figures   # measured 0.9986 and 1.0

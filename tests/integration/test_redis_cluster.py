"""All Redis state works on a real Redis Cluster: multi-key scripts keep their keys in one hash slot."""
from __future__ import annotations

import shutil
import uuid

import pytest

from worker.settings import Settings

from .test_pipeline import FakeExtractor, article, incoming

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("redis-server/redis-cli not installed: cannot start a local Redis Cluster")
    from redis.cluster import RedisCluster

    from worker.adapters.local_services import start_redis_cluster

    nodes = start_redis_cluster(3)
    client = RedisCluster(host="127.0.0.1", port=nodes[0].port)
    yield client
    client.close()
    for node in nodes:
        node.stop()


def test_pipeline_runs_on_a_cluster_and_keys_spread_over_slots(cluster):
    from worker.pipeline import Pipeline

    namespace = f"cl-{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(Settings(), cluster, namespace, live=True, extractor=FakeExtractor())
    docs = [article(n) for n in range(8)]
    copy = {**docs[0], "id": "copy", "url": "https://other.example/a?utm_source=x", "source": "other"}
    first = pipeline.process(incoming(docs + [copy]))
    again = pipeline.process(incoming(docs + [copy]))
    assert first[-1].decision.duplicate_of == docs[0]["id"]
    assert [r.decision for r in again] == [r.decision for r in first]
    keys = [k.decode() for k in cluster.scan_iter(match=f"sw:*{namespace}*", count=1000)]
    slots = {cluster.keyslot(k) for k in keys}
    assert len(slots) > 1, "per-article keys should spread over the cluster"
    for key in keys:  # multi-key scripts: every hash-tagged key of the namespace sits in one slot
        if "{" in key:
            assert cluster.keyslot(key) == cluster.keyslot(f"{{{namespace}}}"), key
    assert pipeline.close_expired() == []  # the stories are all within the window
    pipeline.drop_state()
    assert not list(cluster.scan_iter(match=f"sw:*{namespace}*", count=1000))

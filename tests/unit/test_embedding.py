"""The lead embedder's thread budget: the CPUs the process may use, or the setting; the vectors do not depend on it."""
import numpy as np
import redis

from worker.adapters.story_store import StoryStore, _load_embedder
from worker.core.embedding import Embedder, lead_of

LEADS = [lead_of("Quake hits Aceh", "A magnitude 6.1 earthquake struck Indonesia's Aceh province on Tuesday."),
         lead_of("Actress checks into rehab", "Tara Reid has entered the Promises Treatment Center in Malibu."),
         ""]


def _intra_op_threads(embedder: Embedder) -> int:
    return embedder._session.get_session_options().intra_op_num_threads


def test_by_default_the_embedder_uses_only_the_cpus_the_process_may_use(monkeypatch):
    # loky's CPU count takes the smallest of the machine's CPUs, the affinity mask, the cgroup CPU limit and this
    # variable: set, it stands in for a container limited to one CPU.
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    embedder = Embedder()
    assert embedder.threads == 1
    assert _intra_op_threads(embedder) == 1


def test_the_thread_setting_reaches_the_model_and_leaves_the_vectors_alone():
    _load_embedder.cache_clear()
    try:
        store = StoryStore(redis.Redis(), "threads", None, 86400.0, embedding_threads=3)  # no command is sent
        assert store.embedding_threads is None  # nothing loads before it is needed
        store.warm_up()
        three = store._embedder
        assert store.embedding_threads == three.threads == 3 and _intra_op_threads(three) == 3
    finally:
        _load_embedder.cache_clear()
    one = Embedder(threads=1)
    assert _intra_op_threads(one) == 1
    np.testing.assert_allclose(np.array(three.embed(LEADS)), np.array(one.embed(LEADS)), atol=1e-5)
    assert not any(one.embed(LEADS)[2])  # an empty lead is the zero vector

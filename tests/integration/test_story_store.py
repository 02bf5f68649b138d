"""StoryStore on a real Redis (REDIS_URL, default redis://127.0.0.1:6379/0), one fresh namespace per test."""
import json
import multiprocessing
import os
import uuid
from dataclasses import replace

import pytest
import redis

from worker.adapters.story_store import StoryStore, UnknownArticle
from worker.core.cluster import DAY, ClusterInput
from worker.core.entities import Entity

pytestmark = pytest.mark.integration
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_700_000_000.0
WINDOW = 30 * DAY


@pytest.fixture
def client(redis_client):
    """The session's real Redis (tests/conftest.py starts one when REDIS_URL does not answer)."""
    return redis_client


@pytest.fixture
def store(client):
    store = StoryStore(client, "test-" + uuid.uuid4().hex, ttl_seconds=3600, window_seconds=WINDOW)
    yield store
    store.drop()


def report(article_id, source="outlet-a", day=0.0, title="Fire destroys Harbin warehouse",
           names=(("Harbin", "GPE"), ("Li Qiang", "PERSON"))):
    text = "A fire destroyed a warehouse in Harbin overnight, Li Qiang said, and firefighters fought the blaze."
    entities = [Entity(n, label, 0, len(n), n, "text") for n, label in names]
    return ClusterInput(article_id, title, text, source, f"https://x.example/{article_id}", T0 + day * DAY,
                        entities, "en")


OTHER = dict(title="Flood closes Lima airport", names=(("Lima", "GPE"), ("Peru", "GPE")))


def namespace_keys(store):
    return list(store.redis.scan_iter(match=f"sw:{{{store.namespace}}}:*"))


def test_reports_of_one_event_share_a_story_and_versions_grow(store):
    first, second = store.assign([report("a1"), report("a2", source="outlet-b", day=0.2)])
    other, = store.assign([report("b1", day=0.3, **OTHER)])
    assert (first.action, second.action) == ("created", "article_added")
    assert first.story_id == second.story_id != other.story_id
    assert (first.version, second.version) == (1, 2)
    assert second.score is not None and "Harbin" in second.shared_entities
    assert second.story["article_count"] == 2
    assert set(second.story["sources"]) == {"outlet-a", "outlet-b"}
    assert {e["canonical"] for e in second.story["top_entities"]} >= {"Harbin", "Li Qiang"}


def test_assign_is_idempotent_per_article(store):
    original = store.assign([report("a1"), report("a2", day=0.1)])
    again = store.assign([report("a2", day=0.1), report("a1")])
    assert [c.to_dict() for c in again] == [original[1].to_dict(), original[0].to_dict()]
    third, = store.assign([report("a3", day=0.2)])
    assert third.version == 3 and third.story["article_count"] == 3


def test_decisions_do_not_depend_on_the_batch_cut(client):
    items = [report("a1"), report("b1", day=0.1, **OTHER), report("a2", day=0.2), report("b2", day=0.3, **OTHER)]
    results = []
    for cut in (1, 3, 4):
        store = StoryStore(client, "test-" + uuid.uuid4().hex, None, WINDOW, epoch_ids=False)
        try:
            changes = [c for i in range(0, len(items), cut) for c in store.assign(items[i:i + cut])]
            results.append([(c.story_id, c.version, c.score) for c in changes])
        finally:
            store.drop()
    assert results[0] == results[1] == results[2]


def test_the_candidate_index_does_not_depend_on_the_batch_cut(client):
    """A story that outgrows the keys it is re-filed under keeps, in a key it is no longer re-filed under, the
    time it was filed there, whichever batch the later reports came in (so later batches read the same index)."""
    items = [report(f"a{n}", day=0.1 * n, names=(("Harbin", "GPE"), ("Li Qiang", "PERSON"), (f"Witness{n}", "PERSON"),
                                                 (f"Depot{n}", "FAC"), (f"Brigade{n}", "ORG"))) for n in range(16)]
    indexes = []
    for cut in (1, len(items)):
        store = StoryStore(client, "test-" + uuid.uuid4().hex, None, WINDOW, epoch_ids=False)
        try:
            changes = [c for i in range(0, len(items), cut) for c in store.assign(items[i:i + cut])]
            assert len({c.story_id for c in changes}) == 1
            prefix = f"sw:{{{store.namespace}}}:idx:"
            indexes.append({key.decode()[len(prefix):]: client.zrange(key, 0, -1, withscores=True)
                            for key in client.scan_iter(match=prefix + "*")})
        finally:
            store.drop()
    assert len(indexes[0]) > 32  # more keys than a join re-files the story under
    assert indexes[0] == indexes[1]


def test_duplicate_counts_copy_and_source_not_article(store):
    created, = store.assign([report("a1")])
    dup = store.add_duplicate("d1", duplicate_of="a1", source="copier", event_time=T0 + 3600)
    assert (dup.action, dup.story_id, dup.version) == ("duplicate_seen", created.story_id, 2)
    assert dup.story["copies"] == 1 and dup.story["article_count"] == 1
    assert "copier" in dup.story["sources"]
    assert store.add_duplicate("d1", duplicate_of="a1", source="copier", event_time=T0 + 3600) == dup
    with pytest.raises(UnknownArticle):
        store.add_duplicate("d2", duplicate_of="never-seen", source="x", event_time=T0)


def test_an_update_of_a_duplicate_takes_nothing_from_the_original_s_entities_and_counts_as_an_article(store):
    """The outlet rewrote the page it had copied: the new version brings entities of its own, so it is one more
    article and one copy fewer (else the story's entity counts would outgrow its articles with every such
    update); its update counts once however often it is updated again."""
    created, = store.assign([report("a1")])
    copied = store.add_duplicate("d1", duplicate_of="a1", source="copier", event_time=T0 + 3600)
    assert (copied.story["article_count"], copied.story["copies"]) == (1, 1)
    updated = store.update_article(report("d1-v2", day=0.1, names=(("Wang Yi", "PERSON"),)), update_of="d1")
    counts = {e["canonical"]: e["count"] for e in updated.story["top_entities"]}
    assert counts == {"Harbin": 1, "Li Qiang": 1, "Wang Yi": 1}
    assert (updated.story["article_count"], updated.story["copies"]) == (2, 0)
    again = store.update_article(report("d1-v3", day=0.2, names=(("Wang Yi", "PERSON"),)), update_of="d1-v2")
    assert (again.story["article_count"], again.story["copies"]) == (2, 0)


def test_update_stays_in_story_and_recounts_entities(store):
    created, = store.assign([report("a1")])
    updated = store.update_article(report("a1-v2", day=0.1, title="Fire in Harbin: Wang Yi visits",
                                          names=(("Harbin", "GPE"), ("Wang Yi", "PERSON"))), update_of="a1")
    assert (updated.action, updated.story_id, updated.version) == ("article_updated", created.story_id, 2)
    names = {e["canonical"] for e in updated.story["top_entities"]}
    assert "Wang Yi" in names and "Li Qiang" not in names
    assert updated.story["article_count"] == 1


def test_two_updates_naming_one_version_replace_the_version_the_story_holds(store):
    """Dedup finds an article by URL newest generation first: an update published earlier than the one before
    it names the same version. The story keeps one version per URL, so the second replaces the first."""
    store.assign([report("a1")])
    store.update_article(report("a1-v2", day=0.1, names=(("Harbin", "GPE"), ("Wang Yi", "PERSON"))), update_of="a1")
    later = store.update_article(report("a1-v3", day=0.2, names=(("Harbin", "GPE"), ("Zhou Ming", "PERSON"))),
                                 update_of="a1")
    counts = {e["canonical"]: e["count"] for e in later.story["top_entities"]}
    assert counts == {"Harbin": 1, "Zhou Ming": 1}
    assert later.story["article_count"] == 1


def test_progress_is_reported_for_each_article_weighed_and_assigned(client):
    """The worker's liveness heartbeat: a batch of long texts spends minutes here."""
    calls = []
    store = StoryStore(client, "test-" + uuid.uuid4().hex, ttl_seconds=3600, window_seconds=WINDOW,
                       progress=lambda: calls.append(1))
    try:
        store.assign([report(f"a{i}", day=i * 0.01) for i in range(5)])
        assert len(calls) == 10
    finally:
        store.drop()


def test_an_older_version_arriving_late_leaves_the_newer_one_in_the_story(store):
    """Versions of one URL published at 08:00 and 12:00, the 12:00 one read first: the story keeps it (as the
    dedup index keeps the newest version of a URL), and a later version still replaces it."""
    store.assign([report("a1", title="Harbour closes for repairs")])
    newer = store.update_article(report("a1-v3", day=0.5, title="Harbour reopens after repairs",
                                        names=(("Harbin", "GPE"), ("Wang Yi", "PERSON"))), update_of="a1")
    late = store.update_article(report("a1-v2", day=0.2, title="Harbour closes for repairs",
                                       names=(("Harbin", "GPE"), ("Zhou Ming", "PERSON"))), update_of="a1-v3")
    assert (late.action, late.version) == ("article_updated", newer.version + 1)
    assert late.story["headline"] == "Harbour reopens after repairs"
    assert {e["canonical"]: e["count"] for e in late.story["top_entities"]} == {"Harbin": 1, "Wang Yi": 1}
    latest = store.update_article(report("a1-v4", day=0.8, names=(("Harbin", "GPE"), ("Li Qiang", "PERSON"))),
                                  update_of="a1-v3")
    assert {e["canonical"]: e["count"] for e in latest.story["top_entities"]} == {"Harbin": 1, "Li Qiang": 1}
    assert latest.story["article_count"] == 1


def test_a_bare_headline_joins_and_is_updated_with_the_story_names_it_spells_out(store):
    created, _ = store.assign([report("a1"), report("a2", day=0.1)])
    bare = ClusterInput("h1", "Harbin warehouse fire: Li Qiang orders inquiry", None, "outlet-b",
                        "https://x.example/h1", T0 + 0.2 * DAY, [], "en")
    joined, = store.assign([bare])
    assert (joined.action, joined.story_id) == ("article_added", created.story_id)
    assert set(joined.shared_entities) == {"Harbin", "Li Qiang"}
    counts = {e["canonical"]: e["count"] for e in joined.story["top_entities"]}
    assert counts == {"Harbin": 3, "Li Qiang": 3}
    updated = store.update_article(replace(bare, article_id="h1-v2", title="Harbin fire: inquiry ordered"),
                                   update_of="h1")
    counts = {e["canonical"]: e["count"] for e in updated.story["top_entities"]}
    assert counts == {"Harbin": 3, "Li Qiang": 2}  # the new version names Harbin only


def test_close_expired_closes_once_and_offers_the_event_until_confirmed(store):
    old, = store.assign([report("a1")])
    store.assign([report("b1", day=40, **OTHER)])
    closed = store.close_expired()
    assert [(c.story_id, c.action, c.version) for c in closed] == [(old.story_id, "story_closed", 2)]
    assert store.close_expired() == closed  # its publish failed: offered again, same version
    store.confirm_closed([c.story_id for c in closed])
    assert store.close_expired() == []
    assert closed[0].story["closed"] and not old.story["closed"]
    late_copy = store.add_duplicate("a1-copy", duplicate_of="a1", source="copier", event_time=T0 + 41 * DAY)
    assert (late_copy.story_id, late_copy.version, late_copy.story["closed"]) == (old.story_id, 3, True)
    store.assign([report("c1", day=80, title="Quake in Quito", names=(("Quito", "GPE"),))])
    queued = store.close_expired()  # b1's story left the window in turn: its event offered, not confirmed,
    store.redis.delete(*[store._story_key(c.story_id) for c in queued])  # and then its state expired
    assert queued and store.close_expired() == [] and store.redis.zcard(store._key("closing")) == 0
    late, = store.assign([report("a2", day=40.1)])
    assert late.story_id != old.story_id  # a closed story takes no new articles


def test_a_story_kept_busy_by_updates_and_copies_alone_closes_when_no_report_could_join_it(store):
    """A live blog updated for weeks, a wire story copied late: they move `last_seen` but not the time the
    candidate index finds the story by. Kept open by them, the story would say open while a new report of the
    event founds another story."""
    first, = store.assign([report("a1")])
    version = "a1"
    for day in (10, 20, 35):
        store.update_article(replace(report(f"a1-v{day}", day=day), url="https://x.example/a1"), update_of=version)
        version = f"a1-v{day}"
    store.add_duplicate("a1-copy", duplicate_of="a1", source="copier", event_time=T0 + 36 * DAY)
    store.assign([report("b1", day=36, **OTHER)])
    closed = store.close_expired()
    assert [(c.story_id, c.action) for c in closed] == [(first.story_id, "story_closed")]
    assert closed[0].story["closed"] and closed[0].story["last_seen"] > first.story["last_seen"]  # moved by them
    follow_up, = store.assign([report("a2", day=37)])
    assert follow_up.story_id != first.story_id


def test_one_replica_publishes_a_story_closed_event_and_another_takes_over_only_once_its_claim_lapsed(store):
    """Every replica reads the close queue at its stats interval: unclaimed, each one reading it before the first
    confirmed would publish the same event (and count it)."""
    other = StoryStore(store.redis, store.namespace, ttl_seconds=3600, window_seconds=WINDOW)
    old, = store.assign([report("a1")])
    store.assign([report("b1", day=40, **OTHER)])
    (closed,) = store.close_expired()
    assert closed.story_id == old.story_id and other.close_expired() == []
    assert store.close_expired() == [closed]           # its publish failed: this replica tries again
    store.redis.delete(store._key("closeclaim", closed.story_id))  # it stopped: its claim lapsed
    assert other.close_expired() == [closed] and store.close_expired() == []
    other.confirm_closed([closed.story_id])
    assert store.close_expired() == other.close_expired() == []
    assert store._claim([closed.story_id]) == set()  # a replica that read the queue before the confirm: still taken


def test_a_close_not_yet_published_is_superseded_by_a_later_change_of_the_closed_story(store):
    """Offered again after a failed publish, story_closed would carry the state a late copy made since, under
    the copy's version: two events of one version. The copy's event says closed: nothing more to say."""
    old, = store.assign([report("a1")])
    store.assign([report("b1", day=40, **OTHER)])
    (closed,) = store.close_expired()  # its publish fails: not confirmed
    late_copy = store.add_duplicate("a1-copy", duplicate_of="a1", source="copier", event_time=T0 + 41 * DAY)
    assert late_copy.version == closed.version + 1 and late_copy.story["closed"]
    assert store.close_expired() == [] and store.redis.zcard(store._key("closing")) == 0


def test_a_report_decided_on_a_clock_read_before_another_replica_closed_the_story_does_not_join_it(store):
    """Closing is final: the replica still sees the story as active, and must leave it alone all the same."""
    old, = store.assign([report("a1")])
    store.assign([report("b1", day=40, **OTHER)])
    assert [c.story_id for c in store.close_expired()] == [old.story_id]
    store.redis.set(store._key("clock"), repr(T0))  # the clock as the other replica read it, before the close
    late, = store.assign([report("a2", day=0.1)])
    assert late.story_id != old.story_id and late.action == "created"


def test_copies_do_not_move_a_story_in_the_candidate_index(store):
    """A copy comes last in its batch: were it to move the index, a report after it in the same batch would
    file the story at another time than when it comes in a later batch."""
    store.assign([report("a1")])
    store.add_duplicate("c1", duplicate_of="a1", source="copier", event_time=T0 + 5 * DAY)
    store.assign([report("a2", day=0.1)])
    scores = {score for key in store.redis.scan_iter(match=f"sw:{{{store.namespace}}}:idx:*")
              for _, score in store.redis.zrange(key, 0, -1, withscores=True)}
    assert scores == {T0 + 0.1 * DAY}


def test_a_story_s_keys_expire_with_it_and_a_story_founded_again_starts_clean(store):
    """Versions live in keys of their own, with the story's TTL: no hash field outlives the story (the state
    would grow with every story ever seen, and a story founded again under the same id could never commit)."""
    first, = store.assign([report("a1")])
    keys = namespace_keys(store)
    assert keys and all(store.redis.ttl(k) > 0 for k in keys)
    mine = [k for k in keys if first.story_id.encode() in k or k.endswith(b":art:a1")]
    store.redis.delete(*mine)  # what the TTLs do once nothing touched the story for a while
    again, = store.assign([report("a1")])
    assert (again.action, again.story_id, again.version) == ("created", first.story_id, 1)
    dup = store.add_duplicate("d1", duplicate_of="a1", source="copier", event_time=T0 + 60)
    assert (dup.story_id, dup.version) == (first.story_id, 2)


def test_an_article_sent_again_after_its_record_expired_founds_a_story_under_another_id(store):
    """Joins keep a story alive after its founder's record expired: the founder sent again (the same id, from
    the same URL and content) founds a new story, never one under the id of the old (whose commit could never
    succeed: the replica retried its batch for good)."""
    first, = store.assign([report("a1")])
    store.assign([report("a2", source="outlet-b", day=1)])
    store.assign([report("b1", day=40, **OTHER)])  # the clock leaves the first story behind
    assert [c.story_id for c in store.close_expired()] == [first.story_id]
    store.redis.delete(store._article_key("a1"))  # what its TTL does first
    again, = store.assign([report("a1")])
    assert again.action == "created" and again.story_id != first.story_id and again.version == 1
    assert store.assign([report("a1")]) == [again]
    old = json.loads(store.redis.get(store._story_key(first.story_id)))
    assert (old["article_count"], old["closed"]) == (2, True)


def test_a_story_founded_again_after_redis_lost_its_data_takes_a_new_id(store):
    """Consumers keep the highest version per story id: a founder redelivered after Redis lost its data must
    not start its story again at version 1 under the id whose later versions they hold."""
    first, _ = store.assign([report("a1"), report("a2", source="outlet-b", day=0.1)])
    store.redis.delete(*namespace_keys(store))
    again, = store.assign([report("a1")])
    assert again.action == "created" and again.story_id != first.story_id
    assert all(store.redis.ttl(k) > 0 for k in namespace_keys(store))


def test_story_ids_of_a_namespace_without_epoch_depend_on_the_founder_alone(client):
    """Batch runs (a namespace each) found the same stories under the same ids every time."""
    ids = []
    for _ in range(2):
        store = StoryStore(client, "test-" + uuid.uuid4().hex, ttl_seconds=3600, window_seconds=WINDOW,
                           epoch_ids=False)
        ids.append(store.assign([report("a1")])[0].story_id)
        store.drop()
    assert ids[0] == ids[1]


def test_document_frequencies_are_kept_per_generation_of_event_time_and_expire(store):
    """Rarity is counted over the current and the previous generation: older counts expire instead of growing
    with every name ever seen."""
    from worker.adapters.story_store import _DF_GENERATION_WINDOWS

    generation_days = _DF_GENERATION_WINDOWS * WINDOW / DAY
    store.assign([report("a1"), report("a2", day=0.1)])
    early = store._weighed(report("c0", day=0.2))
    store.assign([report("b1", day=2 * generation_days, **OTHER)])
    df_keys = sorted(k for k in namespace_keys(store) if b":df:" in k)
    assert len(df_keys) == 2
    counts = [int(store.redis.hget(k, "#docs")) for k in df_keys]
    assert sorted(counts) == [1, 2]
    assert all(0 < store.redis.ttl(k) <= 2 * generation_days * DAY + DAY for k in df_keys)
    late = store._weighed(report("c1", day=2 * generation_days + 1))
    assert late.entity_vector["e:harbin"] > early.entity_vector["e:harbin"]  # rare again: a1, a2 no longer count


def test_drop_removes_every_key(store):
    store.assign([report("a1"), report("b1", **OTHER)])
    store.add_duplicate("d1", "a1", "copier", T0)
    assert namespace_keys(store)
    store.drop()
    assert namespace_keys(store) == []


def _assign_at_once(namespace, article_id, source, barrier, results):
    # A stand-in embedder: loading the real model after the barrier would spread the two claims apart.
    store = StoryStore(redis.Redis.from_url(REDIS_URL), namespace, 3600, WINDOW, embedder=_FakeEmbedder())
    barrier.wait()
    change, = store.assign([report(article_id, source=source)])
    results.put((article_id, change.story_id))


def test_two_first_reports_at_once_make_one_story(client):
    context = multiprocessing.get_context("spawn")
    for _ in range(5):
        namespace = "test-race-" + uuid.uuid4().hex
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_assign_at_once, args=(namespace, f"r{n}", f"outlet-{n}", barrier,
                                                                    results)) for n in range(2)]
        store = StoryStore(client, namespace, None, WINDOW, embedder=_FakeEmbedder())
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join(60)
                assert w.exitcode == 0
            stories = dict(results.get(timeout=5) for _ in workers)
            assert len(set(stories.values())) == 1, stories
            replay = store.assign([report("r0"), report("r1")])
            assert {c.story_id for c in replay} == set(stories.values())
            assert max(c.story["article_count"] for c in replay) == 2  # neither assignment lost
            assert sorted(max(replay, key=lambda c: c.version).story["sources"]) == ["outlet-0", "outlet-1"]
        finally:
            for w in workers:
                if w.is_alive():
                    w.terminate()
            store.drop()


class _FakeEmbedder:
    """Stands in for the ONNX model: a fixed unit vector per title, and a count of what it was asked."""

    def __init__(self):
        self.calls = 0

    def embed(self, leads):
        self.calls += len(leads)
        out = []
        for lead in leads:
            vector = [0.0] * 384
            vector[0] = 1.0
            vector[1 + sum(map(ord, lead.split(".")[0])) % 300] = 1.0
            out.append([x / 2 ** 0.5 for x in vector])
        return out


def test_lead_embeddings_running_mean_and_batch_cut(client):
    items = [report("a1"), report("b1", day=0.1, **OTHER), report("a2", day=0.2), report("b2", day=0.3, **OTHER),
             report("a3", day=0.4, title="Harbin warehouse fire: owner questioned")]
    results = []
    for cut in (1, 2, 5):
        embedder = _FakeEmbedder()
        store = StoryStore(client, "test-" + uuid.uuid4().hex, None, WINDOW, embedder=embedder, epoch_ids=False)
        try:
            changes = []
            for i in range(0, len(items), cut):
                changes += store.assign(items[i:i + cut])
            again = store.assign(items)  # redelivery: the records answer, nothing is embedded again
            assert [c.to_dict() for c in again] == [c.to_dict() for c in changes]
            assert embedder.calls == len(items)
            sums = client.hgetall(store._key("embsum"))
            assert int(sums[b"n"]) == len(items) and int(sums[b"0"]) == len(items) * round(127 / 2 ** 0.5)
            state = json.loads(client.get(store._key("story", changes[0].story_id)))
            assert state["emb_n"] == 3 and len(state["emb_members"]) == 3
            results.append([(c.story_id, c.score) for c in changes])
        finally:
            store.drop()
    assert results[0] == results[1] == results[2]
    ids = [s for s, _ in results[0]]
    assert ids[0] == ids[2] == ids[4] != ids[1] == ids[3]

"""DedupIndex on a real Redis over TCP: kinds, idempotency, TTL, cleanup and racing replicas."""
import json
import multiprocessing
import os
import uuid
from dataclasses import replace

import pytest
import redis

from worker.adapters import dedup_index
from worker.adapters.dedup_index import DedupIndex
from worker.core.dedup import DedupInput, DedupOutcome, IndexedArticle, decide
from tests.fingerprint_reference import shingle_hashes
from worker.core.fingerprint import fingerprint
from worker.core.normalize import normalize_text, words

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_700_000_000.0
WINDOW = 3 * 86400
STORIES = [
    "The harbour master of Penwick closed the outer quay on Monday after a storm tore loose two mooring posts "
    "and cracked the concrete apron. Boats were moved to the inner basin overnight. Engineers from the county "
    "will survey the damage this week and repairs could take a month, the harbour office said in a statement.",
    "A bakery on Mill Lane in Dunford won the regional bread award for its rye loaf, beating forty entrants. "
    "The owners, a brother and sister who opened the shop three years ago, said they would use the prize money "
    "to buy a second oven and take on an apprentice from the local college next spring.",
    "Volunteers planted six hundred oak and birch saplings along the old railway line outside Tolby on "
    "Saturday. The trust that manages the path hopes the trees will shelter walkers and give birds a corridor "
    "between the two woods. More planting days are planned for the autumn, organisers said.",
]


@pytest.fixture
def client(redis_client):
    """The session's real Redis (tests/conftest.py starts one when REDIS_URL does not answer)."""
    return redis_client


@pytest.fixture
def index(client):
    idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, WINDOW)
    yield idx
    idx.drop()


def art(article_id, text, url, title="Local news", t=T0):
    return DedupInput(article_id, url, title, text, t)


def test_kinds_and_updates(index):
    out = index.check_and_insert([
        art("o1", STORIES[0], "https://penwick.example/quay"),
        art("o2", STORIES[1], "https://dunford.example/bread"),
        art("d1", STORIES[0], "https://penwick.example/quay", t=T0 + 60),
        art("d2", STORIES[1], "https://aggregator.example/9", t=T0 + 60),
        art("d3", "PENWICK (Wire) - " + STORIES[0][:200] + " Read more local news.", "https://wire.example/1",
            t=T0 + 120),
        art("u1", STORIES[1] + " The award ceremony was held in the town hall.", "https://dunford.example/bread",
            t=T0 + 180),
        art("o3", STORIES[2], "https://tolby.example/trees", t=T0 + 200),
    ])
    got = {o.article_id: (o.duplicate_of, o.kind, o.update_of) for o in out}
    assert got == {
        "o1": (None, None, None), "o2": (None, None, None), "o3": (None, None, None),
        "d1": ("o1", "exact_url", None), "d2": ("o2", "exact_content", None), "d3": ("o1", "near_copy", None),
        "u1": (None, None, "o2"),
    }


def test_redelivery_returns_the_stored_outcome_and_changes_nothing(index, client):
    first = index.check_and_insert([art("o1", STORIES[0], "https://a.example/1"),
                                    art("c1", STORIES[0], "https://b.example/2", t=T0 + 5)])
    keys_before = sorted(client.scan_iter(match="sw:{" + index._prefix.split("{")[1].split("}")[0] + "}:*"))
    dumps_before = {k: client.dump(k) for k in keys_before if not k.endswith(b"meta")}
    again = index.check_and_insert([art("c1", STORIES[0], "https://b.example/2", t=T0 + 5),
                                    art("o1", STORIES[0], "https://a.example/1")])
    assert [again[1], again[0]] == first
    assert again[1].duplicate_of is None and again[0].duplicate_of == "o1"
    assert {k: client.dump(k) for k in keys_before if not k.endswith(b"meta")} == dumps_before
    assert sorted(client.scan_iter(match="sw:{" + index._prefix.split("{")[1].split("}")[0] + "}:*")) == keys_before


def test_decisions_do_not_depend_on_batch_cuts(client):
    items = [art(f"i{n}", STORIES[n % 3] if n % 2 else STORIES[n % 3][: 150 + n], f"https://s{n}.example/x",
                 t=T0 + n) for n in range(12)]
    results = []
    for size in (1, 5, 12):
        idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, WINDOW)
        try:
            results.append([o for i in range(0, 12, size) for o in idx.check_and_insert(items[i:i + size])])
        finally:
            idx.drop()
    assert results[0] == results[1] == results[2]
    assert sum(o.duplicate_of is None for o in results[0]) == 3


def test_decisions_do_not_depend_on_batch_cuts_across_generations(client):
    """Samples are looked up once per batch over every generation any item may read; each item must still see
    only what is live for it (its copies of a story leave the window, later copies start a new original)."""
    items = []
    for n in range(40):
        story = STORIES[n % 3]
        text = story if n % 4 == 0 else story[: 120 + 7 * n] if n % 4 == 1 else "WIRE - " + story + " More."
        items.append(art(f"g{n}", text, f"https://g{n % 5}.example/{n}", t=T0 + n * 0.3 * 86400))
    results = []
    for size in (1, 7, 40):
        idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, WINDOW)
        try:
            results.append([o for i in range(0, 40, size) for o in idx.check_and_insert(items[i:i + size])])
        finally:
            idx.drop()
    assert results[0] == results[1] == results[2]
    originals = [o.article_id for o in results[0] if o.duplicate_of is None]
    assert 3 < len(originals) < 40                 # copies found within the window, new originals after it
    times = {i.article_id: i.event_time for i in items}
    assert all(times[o.article_id] - times[o.duplicate_of] <= WINDOW for o in results[0] if o.duplicate_of)


def test_same_url_and_same_content_are_found_as_one_by_one_whatever_the_batch_cut(client):
    """By URL Redis answers the newest generation first, by content the oldest: an article of this batch in
    another generation than a stored one must not win only for being in the batch."""
    day = 86400
    stored = [art("x", STORIES[0], "https://penwick.example/quay", t=T0 + 2.9 * day),   # newest generation
              art("p", STORIES[2], "https://tolby.example/trees", t=T0),
              art("a", STORIES[1], "https://dunford.example/bread", t=T0 + 2.9 * day)]
    batch = [art("y", STORIES[0] + " Divers inspected the quay wall.", "https://penwick.example/quay", t=T0 + 0.1 * day),
             art("z", STORIES[0] + " The county approved the repairs.", "https://penwick.example/quay", t=T0 + 0.5 * day),
             art("b", STORIES[1], "https://tolby.example/trees", t=T0 + 0.1 * day),   # an update of p, older
             art("d", STORIES[1], "https://mirror.example/bread", t=T0 + day)]
    results = []
    for size in (1, len(batch)):
        idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, WINDOW)
        try:
            idx.check_and_insert(stored)
            results.append({o.article_id: (o.duplicate_of, o.kind, o.update_of)
                            for i in range(0, len(batch), size) for o in idx.check_and_insert(batch[i:i + size])})
        finally:
            idx.drop()
    assert results[0] == results[1]
    assert results[0]["z"] == (None, None, "x") and results[0]["b"] == (None, None, "p")
    assert results[0]["d"] == ("b", "exact_content", None)


def test_live_mode_sets_ttl_and_drop_cleans_up(client):
    ns = "test-dedup-" + uuid.uuid4().hex
    idx = DedupIndex(client, ns, 3600, WINDOW)
    idx.check_and_insert([art("o1", STORIES[0], "https://a.example/1")])
    keys = list(client.scan_iter(match="sw:{" + ns + "}:*"))
    assert keys and all(0 < client.ttl(k) <= 3600 for k in keys)
    idx.drop()
    assert list(client.scan_iter(match="sw:{" + ns + "}:*")) == []


def test_old_entries_fall_out_of_the_window(index):
    index.check_and_insert([art("o1", STORIES[0], "https://a.example/1")])
    index.check_and_insert([art("x", STORIES[2], "https://x.example/1", t=T0 + 2 * WINDOW)])
    late = index.check_and_insert([art("c1", STORIES[0], "https://b.example/2", t=T0 + 2 * WINDOW + 1)])
    assert late[0].duplicate_of is None


def test_an_entry_out_of_the_window_does_not_hide_a_live_one_with_the_same_content(client):
    """The oldest generation read can hold an entry already out of the window: the exact match is the next one.
    A text too short to share samples is found by its content key alone."""
    window = 100.0  # generations of 50 s: at 102, the one of 0..50 is still read
    for text in ("Council approves budget today", ""):
        idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, window)
        try:
            mk = lambda i, t, n: art(i, text, f"https://x{n}.example/a", title="Mayor resigns after vote", t=t)  # noqa: E731
            outcomes = [o for it in (mk("A", 0, 1), mk("B", 101, 2), mk("C", 102, 3))
                        for o in idx.check_and_insert([it])]
        finally:
            idx.drop()
        assert [(o.duplicate_of, o.kind) for o in outcomes] == [(None, None), (None, None), ("B", "exact_content")]


def test_a_late_older_version_does_not_displace_the_latest_article_at_its_url(client):
    """An update published before the version already seen arrives late: the URL keeps the latest one, so an
    edit made while that is still in the window is an update, not a new article."""
    window = 100.0
    for cut in (1, 2):
        idx = DedupIndex(client, "test-dedup-" + uuid.uuid4().hex, None, window)
        try:
            first = [art("A", STORIES[0], "https://x.example/q", t=60.0),
                     art("B", STORIES[0] + " Divers inspected the wall.", "https://x.example/q", t=51.0)]
            out = [o for i in range(0, 2, cut) for o in idx.check_and_insert(first[i:i + cut])]
            edit = idx.check_and_insert([art("C", STORIES[0] + " Repairs begin.", "https://x.example/q", t=155.0)])
        finally:
            idx.drop()
        assert (out[1].update_of, edit[0].update_of, edit[0].duplicate_of) == ("A", "A", None)


def _race(namespace, worker, rounds_items, queue):
    client = redis.Redis.from_url(REDIS_URL)
    idx = DedupIndex(client, namespace, None, WINDOW)
    out = []
    for batch in rounds_items:
        out += [o.to_dict() for o in idx.check_and_insert(batch)]
    queue.put((worker, out))


def test_racing_replicas_admit_exactly_one_original_per_group(client):
    ctx = multiprocessing.get_context("spawn")
    for round_no in range(4):
        ns = "test-dedup-race-" + uuid.uuid4().hex
        queue = ctx.Queue()
        procs = []
        for w in range(4):
            # every replica gets copies (own ids, own URLs) of the same three stories, in its own order
            copies = [art(f"w{w}-s{s}", STORIES[s], f"https://r{w}.example/{s}", t=T0 + s) for s in range(3)]
            copies = copies[w % 3:] + copies[: w % 3]
            batches = [copies[:2], copies[2:]]
            procs.append(ctx.Process(target=_race, args=(ns, w, batches, queue)))
        try:
            for p in procs:
                p.start()
            results = [queue.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(timeout=60)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            DedupIndex(client, ns, None, WINDOW).drop()
        outcomes = [o for _, out in results for o in out]
        originals = {}
        for o in outcomes:
            story = o["article_id"].split("-")[1]
            if o["duplicate_of"] is None:
                originals.setdefault(story, []).append(o["article_id"])
        assert sorted(originals) == ["s0", "s1", "s2"], round_no
        assert all(len(ids) == 1 for ids in originals.values()), originals
        for o in outcomes:
            if o["duplicate_of"] is not None:
                assert o["duplicate_of"] in originals[o["article_id"].split("-")[1]]


def _interleave(first, second, batch):
    """Make `second` commit `batch` between the gather and the commit of `first`'s next batch."""
    commit = first._commit
    done = []

    def commit_after_other(*args, **kwargs):
        if not done:
            done.append(second.check_and_insert(batch))
        return commit(*args, **kwargs)
    first._commit = commit_after_other
    return done


def test_concurrent_commit_on_unrelated_fields_keeps_the_decisions(client):
    ns = "test-dedup-" + uuid.uuid4().hex
    a, b = DedupIndex(client, ns, None, WINDOW), DedupIndex(client, ns, None, WINDOW)
    try:
        other = _interleave(a, b, [art("b1", STORIES[1], "https://b.example/1", t=T0)])
        out = a.check_and_insert([art("a1", STORIES[0], "https://a.example/1", t=T0),
                                  art("a2", STORIES[0], "https://a.example/2", t=T0 + 1)])
        assert other[0][0].duplicate_of is None
        assert [(o.duplicate_of, o.kind) for o in out] == [(None, None), ("a1", "exact_content")]
        assert a.stats["commit_retries"] == 1 and a.stats["regathers"] == 0
        later = a.check_and_insert([art("b2", STORIES[1], "https://c.example/1", t=T0 + 2)])
        assert later[0].duplicate_of == "b1"
    finally:
        a.drop()


def test_concurrent_commit_on_a_field_read_decides_again(client):
    ns = "test-dedup-" + uuid.uuid4().hex
    a, b = DedupIndex(client, ns, None, WINDOW), DedupIndex(client, ns, None, WINDOW)
    try:
        other = _interleave(a, b, [art("b1", STORIES[0], "https://b.example/1", t=T0)])
        out = a.check_and_insert([art("a1", STORIES[0][:300], "https://a.example/1", t=T0 + 1)])
        assert other[0][0].duplicate_of is None
        assert (out[0].duplicate_of, out[0].kind) == ("b1", "near_copy")
        assert a.stats["regathers"] == 1
    finally:
        a.drop()


def _anchor_phrases(text: str) -> list[str]:
    """The three-word phrases under which an article with this body is indexed."""
    tokens = words(normalize_text(text))
    hashes = shingle_hashes(tokens)
    anchors = fingerprint("https://x.example/", "Local news", text).anchors
    return [" ".join(tokens[hashes.index(a):hashes.index(a) + 3]) for a in anchors]


def test_a_single_shared_anchor_reads_no_record_two_do(index, monkeypatch):
    """A phrase that an unrelated article happens to share costs no record read: the number of such chance
    collisions grows with the index, and reading them would make every article slower as the index grows."""
    fetched = []
    load = dedup_index._Batch.load
    monkeypatch.setattr(dedup_index._Batch, "load",
                        lambda self, postings, records: fetched.append(records[:4]) or load(self, postings, records))
    index.check_and_insert([art("o1", STORIES[0], "https://penwick.example/quay")])
    one, two = _anchor_phrases(STORIES[0])[:2]
    out = index.check_and_insert([art("b1", STORIES[2] + " " + one + ".", "https://tolby.example/1", t=T0 + 60)])
    assert out[0].duplicate_of is None and fetched[-1] == (0).to_bytes(4, "big")
    out = index.check_and_insert([art("b2", one + ". " + STORIES[1] + " " + two + ".", "https://dunford.example/2",
                                      t=T0 + 120)])
    assert out[0].duplicate_of is None and fetched[-1] == (1).to_bytes(4, "big")
    out = index.check_and_insert([art("c1", STORIES[0][:160], "https://wire.example/3", t=T0 + 180)])
    assert (out[0].duplicate_of, out[0].kind) == ("o1", "near_copy")


def test_known_boilerplate_is_not_gathered_again_and_decides_the_same(client):
    """Samples whose postings are full stay boilerplate: a long-lived index stops asking Redis for them, and
    decides exactly as a replica that knows nothing yet."""
    footer = " ".join(f"signup{j % 23} newsletter{j % 17} offers{j}" for j in range(30))
    bodies = [" ".join(f"story{i}word{j}" for j in range(70)) for i in range(12)]
    stream = [art(f"a{i}", body + " " + footer, f"https://site{i}.example/{i}", t=T0 + 60 * i)
              for i, body in enumerate(bodies)]
    stream.append(art("copy0", "WIRE - " + bodies[0][:300] + " " + footer, "https://wire.example/0", t=T0 + 900))
    warm = DedupIndex(client, "test-known-" + uuid.uuid4().hex, None, WINDOW)
    cold_namespace = "test-cold-" + uuid.uuid4().hex
    try:
        warm_out, asked_warm = [], []
        for item in stream:
            warm_out.append(warm.check_and_insert([item])[0])
            asked_warm.append(warm.stats["samples_asked"] - sum(asked_warm))
        cold = [DedupIndex(client, cold_namespace, None, WINDOW) for _ in stream]
        cold_out = [index.check_and_insert([item])[0] for index, item in zip(cold, stream)]
        asked_cold = [index.stats["samples_asked"] for index in cold]
    finally:
        warm.drop()
        DedupIndex(client, cold_namespace, None, WINDOW).drop()
    assert warm_out == cold_out
    assert (warm_out[-1].duplicate_of, warm_out[-1].kind) == ("a0", "near_copy")
    assert warm._full, "the footer's postings filled up"
    assert sum(asked_warm[-4:]) < sum(asked_cold[-4:]), (asked_warm, asked_cold)


def test_a_chance_hit_of_a_phrase_is_not_sent_back(index, monkeypatch):
    """A sample whose posting is neither full, nor points at a possible candidate, nor can be filled by the
    batch changes no decision: GATHER leaves it out, so chance hits (more of them as the index grows) cost
    nothing on the client."""
    postings = []
    load = dedup_index._Batch.load
    monkeypatch.setattr(dedup_index._Batch, "load", lambda self, sent, records: (
        postings.append(int.from_bytes(sent[:4], "big")) or load(self, sent, records)))
    index.check_and_insert([art("o1", STORIES[0], "https://penwick.example/quay")])
    probe = phrase = None
    for phrase in _anchor_phrases(STORIES[0]):
        probe = STORIES[2] + " " + phrase + "."
        fp = fingerprint("https://tolby.example/1", "Local news", probe)
        sample = shingle_hashes(words(normalize_text(phrase)))[0]
        if sample in fp.sketch and sample not in fp.anchors:
            break
    else:
        pytest.fail("no anchor phrase of the original is a plain (non-anchor) sample of the probe")
    out = index.check_and_insert([art("b1", probe, "https://tolby.example/1", t=T0 + 60)])
    assert out[0].duplicate_of is None and postings[-1] == 0
    out = index.check_and_insert([art("c1", STORIES[0][:160], "https://wire.example/3", t=T0 + 180)])
    assert (out[0].duplicate_of, out[0].kind) == ("o1", "near_copy") and postings[-1] >= 2


def test_a_sample_full_only_across_generations_is_boilerplate(index, client, monkeypatch):
    """Boilerplate is counted over every generation live for the item: two postings of two originals each, in
    two generations, make a full one, though neither is full and neither points at a candidate."""
    probe = art("p1", STORIES[1], "https://dunford.example/p1", t=T0)
    fp = fingerprint(probe.canonical_url, probe.title, probe.text)
    plain = [s for s in fp.sketch if s not in fp.anchors]
    shared, lone = plain[0], plain[1]
    gen = index._gen(T0)
    for g, refs in ((gen - 1, b"r0000001r0000002"), (gen, b"r0000003r0000004")):
        client.hset(f"{index._prefix}{g}:x", shared.to_bytes(4, "big"), refs)
    client.hset(f"{index._prefix}{gen}:x", lone.to_bytes(4, "big"), b"r0000005")
    seen = []
    monkeypatch.setattr(dedup_index, "decide", lambda item, fp_, evidence, now, window: (
        seen.append(evidence.boilerplate) or decide(item, fp_, evidence, now, window)))
    out = index.check_and_insert([probe])
    assert out[0].duplicate_of is None
    assert shared in seen[0] and lone not in seen[0]


def test_other_samples_are_read_only_for_an_item_that_may_have_a_candidate(index, client, monkeypatch):
    """Probe samples find candidates; the rest of a sketch matters only for its boilerplate when there is a
    candidate to compare with, so it is read for those items alone (most articles have none)."""
    fp = fingerprint("https://dunford.example/1", "Local news", STORIES[1])
    other = next(s for s in fp.sketch if s not in fp.probes)
    client.hset(f"{index._prefix}{index._gen(T0)}:x", other.to_bytes(4, "big"), b"r0000001r0000002r0000003r0000004")
    seen = []
    monkeypatch.setattr(dedup_index, "decide", lambda item, fp_, evidence, now, window: (
        seen.append(evidence) or decide(item, fp_, evidence, now, window)))
    first = index.check_and_insert([art("o1", STORIES[1], "https://dunford.example/1", t=T0)])
    assert first[0].duplicate_of is None and not seen[-1].candidates and other not in seen[-1].boilerplate
    copy = index.check_and_insert([art("c1", "DUNFORD - " + STORIES[1], "https://wire.example/1", t=T0 + 60)])
    assert copy[0].duplicate_of == "o1" and seen[-1].candidates and other in seen[-1].boilerplate


def test_whether_an_article_had_a_body_survives_in_redis_for_another_replica(client):
    """A headline-only item, read back by a replica that did not index it, is still known as one: an article
    quoting its headline is not its copy, and a feed's headline of a page held in full is a copy of it."""
    namespace = "test-headline-" + uuid.uuid4().hex
    headline = "Apple unveils new iPhone with satellite messaging at Cupertino event"
    try:
        DedupIndex(client, namespace, None, WINDOW).check_and_insert([
            art("h1", None, "https://feed.example/h1", title=headline),
            art("o1", STORIES[0], "https://penwick.example/quay", title="Storm closes Penwick quay")])
        out = DedupIndex(client, namespace, None, WINDOW).check_and_insert([
            art("b1", "Markets opened higher on Tuesday as investors weighed the latest jobs figures and a rally "
                      "in technology shares. Read more: " + headline, "https://brief.example/1",
                title="Morning briefing: markets open higher", t=T0 + 60),
            art("f1", None, "https://penwick.example/quay", title="Storm closes Penwick quay", t=T0 + 60)])
        got = {o.article_id: (o.duplicate_of, o.kind, o.update_of) for o in out}
        assert got == {"b1": (None, None, None), "f1": ("o1", "exact_url", None)}
    finally:
        DedupIndex(client, namespace, None, WINDOW).drop()



def test_a_record_of_an_earlier_version_reads_as_not_saying_whether_it_had_a_body():
    """Records carry `headline_only` as a trailing field; one written before it existed has none."""
    fp = fingerprint("https://feed.example/h1", "Storm closes Penwick quay", "")
    record = IndexedArticle("h1", T0, fp.content_key, fp.level, fp.sketch, fp.title_words, fp.body_supports_title,
                            headline_only=fp.headline_only)
    raw = dedup_index._encode_record(record, DedupOutcome("h1", None, None, None, None, {}))
    header, _, binary = raw.partition(b"\n")
    earlier = json.dumps(json.loads(header)[:11], separators=(",", ":")).encode() + b"\n" + binary
    assert dedup_index._decode_record(raw) == record and record.headline_only is True
    assert dedup_index._decode_record(earlier) == replace(record, headline_only=None)


def test_an_update_after_the_page_was_sent_again_names_the_page_not_the_copy(index):
    page, edit = STORIES[0], STORIES[0] + " Repairs will start on Monday."
    out = index.check_and_insert([
        art("p1", page, "https://penwick.example/quay", title="Storm closes Penwick quay"),
        art("p2", page, "https://penwick.example/quay", title="Storm closes Penwick quay", t=T0 + 60),
        art("h1", None, "https://penwick.example/quay?utm_source=rss", title="Storm closes Penwick quay", t=T0 + 90)])
    later = DedupIndex(index._redis, index._prefix.split("{")[1].split("}")[0], None, WINDOW)  # another replica
    out += later.check_and_insert([
        art("h2", None, "https://penwick.example/quay", title="Storm shuts Penwick quay for a month", t=T0 + 100),
        art("p3", edit, "https://penwick.example/quay", t=T0 + 120),
        art("p4", edit + " More to follow.", "https://penwick.example/quay", t=T0 + 180)])
    got = {o.article_id: (o.duplicate_of, o.kind, o.update_of) for o in out}
    assert got == {"p1": (None, None, None), "p2": ("p1", "exact_url", None), "h1": ("p1", "exact_url", None),
                   "h2": ("p1", "exact_url", None),   # a corrected feed headline does not replace the page either
                   "p3": (None, None, "p1"), "p4": (None, None, "p3")}

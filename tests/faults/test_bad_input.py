"""Generated bad messages (the validator fuzzer's mutations) mixed with good ones, through a running worker."""
from __future__ import annotations

import json
import random

from .audit import assert_alive, audit, encode, make_articles, rss_kb, wait_until
from .conftest import size
from .test_fuzz_validator import LIMITS, check, mutate


def test_bad_messages_all_dead_lettered_good_ones_decided_no_crash_memory_bounded(make_stack):
    bad_count, good_count = size(1000, 5000), size(200, 1000)
    rng = random.Random(51)
    bad = [mutate(rng) for _ in range(bad_count)]
    assert all(check(b) for b in bad), "every mutation is invalid under the worker's limits"
    good_values, good_keys = encode(make_articles(good_count, seed=52))
    mixed = [(v, k, False) for v, k in zip(good_values, good_keys)] + [(b, None, True) for b in bad]
    rng.shuffle(mixed)
    partitions = [rng.randrange(4) for _ in mixed]

    stack = make_stack(SW_MAX_MESSAGE_BYTES=str(LIMITS["max_bytes"]), SW_MAX_TEXT_CHARS=str(LIMITS["max_text_chars"]),
                       SW_MAX_BATCH="32")
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    warm = [good_values[0]]  # one batch first, so the baseline includes a model that has run
    stack.produce(warm, [good_keys[0]], partitions=[0])
    wait_until(lambda: stack.committed()[0] >= 1, 120, "the warm-up article")
    rss_before = rss_kb(worker.process.pid)

    stack.produce([v for v, _, _ in mixed], [k for _, k, _ in mixed], partitions=partitions)
    expected_bad = set()
    offsets = {p: (1 if p == 0 else 0) for p in range(4)}
    for (_, _, is_bad), p in zip(mixed, partitions):
        if is_bad:
            expected_bad.add((p, offsets[p]))
        offsets[p] += 1
    events, letters = stack.wait_accounted({json.loads(v)["id"] for v in good_values}, dead=bad_count,
                                           timeout=size(240, 900))
    assert_alive(worker)
    rss_after = rss_kb(worker.process.pid)
    assert worker.terminate() == 0
    report = audit(stack, expected_bad=expected_bad, events=events, letters=letters)
    grown_mb = (rss_after - rss_before) / 1024
    dlq_pct = 100.0 * (report.expected_bad - len(report.bad_not_dead)) / max(1, report.expected_bad)
    line = (f"bad input: bad={bad_count} good={good_count} dead_lettered={report.dead_lettered} "
            f"dlq={dlq_pct:.1f}% of bad; good_dead={len(report.good_dead)} lost={len(report.lost)} "
            f"rss {rss_before // 1024}->{rss_after // 1024} MB (+{grown_mb:.0f})")
    print(line)
    report.assert_clean(line)
    assert report.expected_bad == bad_count and dlq_pct == 100.0, line
    assert report.decided == good_count, line
    assert grown_mb < 300, line


"""Scale the group 1 -> 3 -> 1 while it consumes (the extra members leave with SIGTERM)."""
from __future__ import annotations

from .audit import assert_alive, audit, encode, logged, make_articles, progress, reference_stories, wait_until
from .conftest import size


def test_scaling_1_3_1_loses_nothing_and_counts_nothing_twice(make_stack, own_redis):
    cycles, count = size(1, 3), size(1000, 5000)
    articles = make_articles(count, seed=41)
    values, keys = encode(articles)
    stack = make_stack()
    first = stack.start_worker()
    stack.wait_logged(first, "partitions_assigned")
    chunk = count // (2 * cycles + 1)
    bounds = [(k * chunk, count if k == 2 * cycles else (k + 1) * chunk) for k in range(2 * cycles + 1)]
    sent = 0
    extra_exits = []
    for cycle in range(cycles):
        lo, hi = bounds[2 * cycle]
        stack.produce(values[lo:hi], keys[lo:hi])
        wait_until(lambda: progress(stack) >= lo + (hi - lo) // 3, 300, "progress before scaling up")
        extras = [stack.start_worker(), stack.start_worker()]
        lo, hi = bounds[2 * cycle + 1]
        stack.produce(values[lo:hi], keys[lo:hi])
        for w in extras:
            wait_until(lambda w=w: any(line.get("partitions") for line in logged(w, "partitions_assigned")), 120,
                       f"{w.name} owning partitions")
        # Scale back down while work is still queued.
        extra_exits += [w.terminate() for w in extras]
        sent = hi
    lo, hi = bounds[-1]
    stack.produce(values[lo:hi], keys[lo:hi])
    sent = hi
    assert sent == count

    events, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(300, 900))
    assert_alive(first)
    revoked = len(logged(first, "partitions_revoked"))
    assert first.terminate() == 0
    report = audit(stack, reference=reference_stories(values, f"redis://{own_redis.address}/0"), events=events,
                   letters=letters)
    line = (f"rebalance 1->3->1 x{cycles}: articles={count} extra_exit_codes={extra_exits} "
            f"revocations(first worker)={revoked} lost={len(report.lost)} double_counted={len(report.double_counted)} "
            f"inconsistent={len(report.inconsistent)} duplicate_stories={report.duplicate_stories} "
            f"stories={report.stories}/{report.reference_stories}")
    print(line)
    assert extra_exits == [0] * (2 * cycles), line
    report.assert_clean(line)
    assert report.decided == count and report.stories == report.reference_stories, line

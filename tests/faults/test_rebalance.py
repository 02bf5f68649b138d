"""Rebalances while the group consumes: scaling 1 -> 3 -> 1 (the extra members leave with SIGTERM), and one
while a batch waits out a Redis outage."""
from __future__ import annotations

from .audit import (assert_alive, audit, encode, logged, make_articles, progress, reference_stories,
                    retrying_in_a_redis_outage, wait_until)
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


def test_a_rebalance_while_a_batch_waits_out_a_redis_outage_loses_nothing(make_stack, own_redis):
    """The held batch keeps the partitions the worker still owns after the group moved (kafka-python keeps their
    read position, past the batch), and partitions assigned during the backoff are not read and thrown away."""
    count = size(400, 2000)
    articles = make_articles(count, seed=43)
    values, keys = encode(articles)
    stack = make_stack()
    first = retrying_in_a_redis_outage(stack, own_redis, values, keys)
    try:
        assignments = len(logged(first, "partitions_assigned"))
        second = stack.start_worker()
        wait_until(lambda: any(line.get("partitions") for line in logged(second, "partitions_assigned")), 120,
                   "the second worker owning partitions")
        wait_until(lambda: len(logged(first, "partitions_assigned")) > assignments, 60, "the first worker reassigned")
        assignments = len(logged(first, "partitions_assigned"))
        second_exit = second.terminate()  # gives its partitions back, still in the outage
        wait_until(lambda: len(logged(first, "partitions_assigned")) > assignments, 60,
                   "the first worker owning every partition again")
        assert_alive(first)
    finally:
        own_redis.resume()

    events, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(240, 600))
    assert_alive(first)
    assert first.terminate() == 0
    report = audit(stack, reference=reference_stories(values, f"redis://{own_redis.address}/0"), events=events,
                   letters=letters)
    line = (f"rebalance during a redis outage: articles={count} second_exit={second_exit} lost={len(report.lost)} "
            f"double_counted={len(report.double_counted)} duplicate_stories={report.duplicate_stories} "
            f"stories={report.stories}/{report.reference_stories}")
    print(line)
    assert second_exit == 0, line
    report.assert_clean(line)
    assert report.decided == count and report.stories == report.reference_stories, line

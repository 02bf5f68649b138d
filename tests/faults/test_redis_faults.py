"""Redis goes away mid-stream: an outage (SIGSTOP/SIGCONT) and a restart that lost every key."""
from __future__ import annotations

import time

from worker.adapters.local_services import start_redis

from .audit import (assert_alive, audit, encode, logged, make_articles, progress, reference_stories,
                    retrying_in_a_redis_outage, wait_until)
from .conftest import size


def test_redis_outage_stops_commits_retries_and_resumes_without_loss(make_stack, own_redis):
    count, outage_s = size(600, 3000), size(10, 45)
    articles = make_articles(count, seed=21)
    values, keys = encode(articles)
    stack = make_stack()
    worker = retrying_in_a_redis_outage(stack, own_redis, values, keys)
    try:
        frozen = stack.committed()
        time.sleep(outage_s)
        assert stack.committed() == frozen, "offsets were committed while Redis was down"
        assert_alive(worker)
        during = logged(worker, "batch_retry")
    finally:
        own_redis.resume()

    events, _ = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(180, 600))
    assert_alive(worker)
    assert worker.terminate() == 0
    report = audit(stack, reference=reference_stories(values, f"redis://{own_redis.address}/0"), events=events)
    line = (f"redis outage: {outage_s}s articles={count} batch_retry={len(during)} committed_at_outage="
            f"{sum(frozen.values())} lost={len(report.lost)} double_counted={len(report.double_counted)} "
            f"duplicate_stories={report.duplicate_stories} stories={report.stories}/{report.reference_stories}")
    print(line)
    assert all("Redis unavailable" in r["reason"] for r in during), line
    report.assert_clean(line)
    assert report.decided == count and report.stories == report.reference_stories, line


def test_redis_restarted_empty_the_worker_keeps_going_without_loss(make_stack, own_redis):
    count = size(600, 3000)
    articles = make_articles(count, seed=22)
    values, keys = encode(articles)
    stack = make_stack()
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(values[:count // 2], keys[:count // 2])
    wait_until(lambda: progress(stack) >= 32, 120, "first commits")

    port = own_redis.port
    own_redis.stop()  # no persistence: every key is gone
    retries_before = len(logged(worker, "batch_retry"))
    stack.produce(values[count // 2:], keys[count // 2:])
    wait_until(lambda: len(logged(worker, "batch_retry")) > retries_before, 60, "a batch_retry warning")
    replacement = start_redis(port)
    try:
        events, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(180, 600))
        assert_alive(worker)
        assert worker.terminate() == 0
        retries = logged(worker, "batch_retry")
        starts = [line for line in worker.log_lines() if line.get("event") == "starting"]
        report = audit(stack, check_redis=False, events=events, letters=letters)
    finally:
        replacement.stop()
    line = (f"redis restarted empty: articles={count} batch_retry={len(retries)} lost={len(report.lost)} "
            f"dead={report.dead_lettered} inconsistent(in-flight, re-decided on empty state)="
            f"{len(report.inconsistent)} stories={report.stories} worker_starts={len(starts)}")
    print(line)
    assert len(starts) == 1, f"the worker restarted: {line}"
    assert retries and all("Redis unavailable" in r["reason"] for r in retries), line
    assert not report.lost and not report.both and report.decided == count, line
    assert report.dead_lettered == 0, line
    # Story state of the first half is gone (documented): later articles may start new stories, but every
    # story's own versions and counts still add up.
    assert not report.double_counted, line

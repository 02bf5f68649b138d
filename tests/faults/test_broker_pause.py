"""The broker stops answering mid-stream (SIGSTOP of the tansu pid, then SIGCONT): tansu is memory-only, so a
real restart would wipe the topics; a pause is what "unreachable" looks like to the worker."""
from __future__ import annotations

import time

from .audit import assert_alive, audit, encode, logged, make_articles, progress, reference_stories, wait_until
from .conftest import FAULT_ENV, size
from worker.cli import check


def test_broker_unreachable_no_crash_no_commit_of_unpublished_work_nothing_lost(make_stack, own_redis):
    count, pause_s = size(600, 3000), size(15, 60)
    articles = make_articles(count, seed=31)
    values, keys = encode(articles)
    stack = make_stack()
    assert stack.broker is not None, "the scenario needs a broker of its own to pause"
    workers = [stack.start_worker() for _ in range(2)]
    for w in workers:
        stack.wait_logged(w, "partitions_assigned")
    stack.produce(values, keys)
    wait_until(lambda: progress(stack) >= 48, 120, "first commits")
    before = progress(stack)

    stack.broker.pause()
    try:
        time.sleep(pause_s)
        assert_alive(*workers)
    finally:
        stack.broker.resume()

    events, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(240, 600))
    assert_alive(*workers)

    # Idle workers must keep their loop turning through an outage too (liveness probe: `story-worker check`).
    idle_pause_s = size(20, 60)
    time.sleep(6)  # past a stats interval: the periodic lag query is one of the calls that must not block
    beats = [stack.workdir / f"{w.name}.alive" for w in workers]
    oldest = 0.0
    stack.broker.pause()
    try:
        until = time.monotonic() + idle_pause_s
        while time.monotonic() < until:
            time.sleep(1)
            oldest = max(oldest, max(time.time() - b.stat().st_mtime for b in beats))
    finally:
        stack.broker.resume()
    assert_alive(*workers)
    # The longest call the loop makes is a Kafka call bounded by SW_PRODUCE_TIMEOUT_S (publish, commit, the lag
    # query) and the heartbeat is touched about every second between calls: it must stay younger than the age at
    # which the liveness probe (`story-worker check`) would have the container restarted.
    probe_max_age = next(p.default for p in check.params if p.name == "max_age")
    assert oldest < probe_max_age, f"a worker loop stalled {oldest:.0f}s during a {idle_pause_s}s broker outage"
    print(f"broker outage of {idle_pause_s}s: oldest heartbeat {oldest:.1f}s (SW_PRODUCE_TIMEOUT_S "
          f"{FAULT_ENV['SW_PRODUCE_TIMEOUT_S']}, probe limit {probe_max_age:.0f}s)")
    warnings = {name: sum(len(logged(w, name)) for w in workers)
                for name in ("batch_retry", "poll_failed", "commit_failed_rebalanced", "partitions_revoked")}
    for w in workers:
        assert w.terminate() == 0
    # Every committed offset's article was published (a commit of unpublished work would show as lost here:
    # nothing would ever redeliver it).
    report = audit(stack, reference=reference_stories(values, f"redis://{own_redis.address}/0"), events=events,
                   letters=letters)
    line = (f"broker paused {pause_s}s busy + {idle_pause_s}s idle (oldest heartbeat {oldest:.0f}s): "
            f"articles={count} committed_before={before} warnings={warnings} "
            f"lost={len(report.lost)} double_counted={len(report.double_counted)} "
            f"duplicate_stories={report.duplicate_stories} reemitted_events={report.reemitted_events}")
    print(line)
    report.assert_clean(line)
    assert report.decided == count and report.stories == report.reference_stories, line


def test_a_stop_during_a_broker_outage_ends_cleanly_within_its_bound(make_stack):
    """SIGTERM while the batch in flight waits for a paused broker: the worker gives the batch up at its
    deadline, leaves unacknowledged records behind in its producer, and still exits 0 (not 1 with a traceback
    from closing that producer) within the bound the deployment's grace period is sized from."""
    articles = make_articles(300, seed=37)
    values, keys = encode(articles)
    env = {"SW_PRODUCE_TIMEOUT_S": "4", "SW_SHUTDOWN_DEADLINE_S": "5"}  # the bound scales with them: a short run
    stack = make_stack(**env)
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(values, keys)
    wait_until(lambda: progress(stack) >= 32, 120, "first commits")
    stack.broker.pause()
    try:
        wait_until(lambda: logged(worker, "batch_retry"), 60, "a batch waiting for the broker")
        started = time.monotonic()
        code = worker.terminate(timeout=180)
        took = time.monotonic() - started
    finally:
        stack.broker.resume()
    produce_s, deadline_s = float(env["SW_PRODUCE_TIMEOUT_S"]), float(env["SW_SHUTDOWN_DEADLINE_S"])
    bound = 2 * 2 * produce_s + deadline_s + 2 * 5 + 10  # as tests/unit/test_deploy_files.py sizes the grace
    tail = worker.log_path.read_text(errors="replace")[-1500:]
    assert code == 0, tail
    assert logged(worker, "stopped") and logged(worker, "batch_abandoned_at_shutdown"), tail
    assert took <= bound, f"the stop took {took:.0f}s, over {bound:.0f}s"
    print(f"stop during a broker outage: exit {code} after {took:.1f}s (bound {bound:.0f}s)")

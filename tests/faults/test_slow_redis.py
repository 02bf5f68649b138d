"""Redis answers slowly (DEBUG SLEEP in a loop on the worker's own redis-server) with a short poll interval:
the worker backs off with its partitions paused and stays in its group."""
from __future__ import annotations

import threading
import time

import redis

from .audit import assert_alive, audit, encode, logged, make_articles, progress, reference_stories, rss_kb, wait_until
from .conftest import size


def _stall(url: str, stop: threading.Event, sleep_s: float, gap_s: float) -> None:
    client = redis.Redis.from_url(url, socket_timeout=sleep_s + 30)
    while not stop.is_set():
        client.execute_command("DEBUG", "SLEEP", sleep_s)
        stop.wait(gap_s)
    client.close()


def test_slow_redis_backs_off_stays_in_group_and_decides_everything(make_stack, own_redis):
    count, slow_s = size(600, 3000), size(20, 120)
    articles = make_articles(count, seed=61)
    values, keys = encode(articles)
    url = f"redis://{own_redis.address}/0"
    stack = make_stack(SW_MAX_POLL_INTERVAL_MS="15000", SW_REDIS_TIMEOUT_S="1")
    worker = stack.start_worker()
    stack.wait_logged(worker, "partitions_assigned")
    stack.produce(values[:count // 3], keys[:count // 3])
    wait_until(lambda: progress(stack) >= 16, 120, "first commits")
    rss_before = rss_kb(worker.process.pid)
    assignments_before = len(logged(worker, "partitions_assigned"))
    revoked_before = len(logged(worker, "partitions_revoked"))

    stop = threading.Event()
    staller = threading.Thread(target=_stall, args=(url, stop, 2, 0.3), daemon=True)
    staller.start()
    try:
        stack.produce(values[count // 3:], keys[count // 3:])
        t_end = time.monotonic() + slow_s
        rss_peak = rss_before
        while time.monotonic() < t_end:
            assert_alive(worker)
            rss_peak = max(rss_peak, rss_kb(worker.process.pid))
            time.sleep(1)
        retries = logged(worker, "batch_retry")
        revoked = len(logged(worker, "partitions_revoked")) - revoked_before
        assignments = len(logged(worker, "partitions_assigned")) - assignments_before
        slow_progress = progress(stack)
    finally:
        stop.set()
        staller.join(10)

    events, letters = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=size(240, 600))
    assert_alive(worker)
    rss_after = rss_kb(worker.process.pid)
    assert worker.terminate() == 0
    report = audit(stack, reference=reference_stories(values, url), events=events, letters=letters)
    grown_mb = (max(rss_peak, rss_after) - rss_before) / 1024
    line = (f"slow redis {slow_s}s (DEBUG SLEEP 2 every 2.3s, timeout 1s, max_poll_interval 15s): articles={count} "
            f"batch_retry={len(retries)} revocations={revoked} reassignments={assignments} "
            f"committed_during_slowness={slow_progress} lost={len(report.lost)} "
            f"double_counted={len(report.double_counted)} rss +{grown_mb:.0f} MB")
    print(line)
    assert retries, f"no backoff logged: {line}"
    assert revoked == 0 and assignments == 0, f"the worker left or was evicted from its group: {line}"
    report.assert_clean(line)
    assert report.decided == count and report.stories == report.reference_stories, line
    assert grown_mb < 300, line

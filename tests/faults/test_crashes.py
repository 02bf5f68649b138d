"""kill -9 of group members in the middle of batches, repeatedly, each replaced by a fresh process."""
from __future__ import annotations

import random

from .audit import assert_alive, audit, encode, logged, make_articles, progress, reference_stories, wait_until
from .conftest import size


def test_repeated_kill_9_loses_nothing_counts_nothing_twice_and_splits_no_story(make_stack, own_redis):
    kills, count = size(3, 20), size(1000, 5000)
    articles = make_articles(count, seed=11)
    values, keys = encode(articles)
    stack = make_stack()
    workers = [stack.start_worker() for _ in range(2)]
    for w in workers:
        stack.wait_logged(w, "partitions_assigned")

    rng = random.Random(5)
    waves = [(count * k // (kills + 1), count * (k + 1) // (kills + 1)) for k in range(kills + 1)]
    mid_stream = 0
    for number, (start, end) in enumerate(waves):
        stack.produce(values[start:end], keys[start:end])
        if number == kills:
            break
        # Kill once part of this wave is committed and the rest is still to do: a batch is in flight.
        target = start + (end - start) // 4
        done = wait_until(lambda: (lambda p: p if p >= target else 0)(progress(stack)), 300,
                          f"progress past {target}")
        mid_stream += done < end
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        workers.append(stack.start_worker())

    ids = {a["id"] for a in articles}
    events, letters = stack.wait_accounted(ids, dead=0, timeout=size(300, 900))
    assert_alive(*workers)
    redelivered = sum(s["redelivered"] for w in stack.workers for s in logged(w, "stats"))
    for w in workers:
        assert w.terminate() == 0
    report = audit(stack, reference=reference_stories(values, f"redis://{own_redis.address}/0"),
                   events=stack.events(), letters=stack.dead_letters())
    line = (f"crashes: kills={kills} (mid-stream {mid_stream}) articles={count} lost={len(report.lost)} "
            f"double_counted={len(report.double_counted)} inconsistent={len(report.inconsistent)} "
            f"duplicate_stories={report.duplicate_stories} stories={report.stories}/{report.reference_stories} "
            f"redelivered(logged)={redelivered} reemitted_events={report.reemitted_events}")
    print(line)
    report.assert_clean(line)
    assert report.decided == count, line
    assert report.stories == report.reference_stories, line
    assert mid_stream >= 1, f"no kill landed mid-stream: {line}"

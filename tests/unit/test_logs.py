"""Every log line is one JSON object, also while kafka-python logs from its own threads, tracebacks included."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The worker's own lines and a library's (the stdlib bridge, from another thread, as kafka-python's heartbeat
# thread logs), then a library error with its traceback. Run apart: `configure` sets process-wide logging.
_SCRIPT = r"""
import logging, threading, structlog
from worker import logs
logs.configure("json", "INFO")
def library():
    lg = logging.getLogger("kafka.coordinator.heartbeat")
    for i in range(5000):
        lg.warning(f"Heartbeat session expired {i}")  # each message its own (the throttle lets each through)
    try:
        1 / 0
    except ZeroDivisionError:
        lg.exception("heartbeat failed")
thread = threading.Thread(target=library)
thread.start()
log = structlog.get_logger()
for i in range(5000):
    log.info("stats", articles=i)
thread.join()
"""


def test_concurrent_lines_stay_whole_and_library_tracebacks_are_text():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 10001
    records = []
    for line in lines:
        records.append(json.loads(line))  # a line split by another thread's would not parse
    assert sum(r["event"] == "stats" for r in records) == 5000
    (failed,) = [r for r in records if r["event"] == "heartbeat failed"]
    assert failed["level"] == "error" and failed["logger"] == "kafka.coordinator.heartbeat"
    assert "ZeroDivisionError: division by zero" in failed["exception"] and "Traceback" in failed["exception"]


def test_a_library_repeating_one_message_is_throttled_and_the_next_line_counts_what_was_left_out(monkeypatch):
    import logging

    from worker import logs

    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    throttle = logs.LibraryThrottle(seconds=30)

    def record(msg, *args, level=logging.ERROR, name="kafka.net.manager"):
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    failed = "Connection failed: %s"
    assert throttle.filter(record(failed, "ECONNREFUSED"))
    assert [throttle.filter(record(failed, "ECONNREFUSED")) for _ in range(5)] == [False] * 5
    assert throttle.filter(record("Bootstrap failed: %s", "timeout"))  # another message
    assert throttle.filter(record(failed, "x", level=logging.WARNING))  # another level
    clock[0] += 31
    again = record(failed, "ECONNREFUSED")
    assert throttle.filter(again) and again.getMessage() == \
        "Connection failed: ECONNREFUSED [5 more like this in the last 30 s left out]"


def test_a_metadata_refresh_cancelled_by_closing_its_client_is_no_error_line():
    """kafka-python logs it at ERROR when a client closes mid-refresh (every clean demo ended on one); a refresh
    that failed for a real reason still shows."""
    import logging

    from kafka.errors import Cancelled, KafkaConnectionError

    from worker.logs import _not_cancelled_by_close

    def record(exc):
        return logging.LogRecord("kafka.cluster", logging.ERROR, __file__, 1, "Metadata refresh: failed %s", (exc,),
                                 None)

    assert not _not_cancelled_by_close(record(Cancelled()))
    assert _not_cancelled_by_close(record(KafkaConnectionError("refused")))
    assert _not_cancelled_by_close(logging.LogRecord("kafka.conn", logging.ERROR, __file__, 1, "x %s",
                                                     (Cancelled(),), None))

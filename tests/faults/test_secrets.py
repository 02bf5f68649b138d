"""Secrets never reach the logs: the Redis password in REDIS_URL and the Kafka SASL password."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from worker.adapters.local_services import free_port, port_open

from .audit import assert_alive, encode, logged, make_articles, wait_until

REDIS_PASSWORD = "S3cretPw"
SASL_PASSWORD = "K4fkaSecr3t"
SSL_PASSWORD = "Ss1Secr3t"


def test_secrets_are_redacted_in_the_start_line_and_absent_from_every_log_line(make_stack):
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="redis-auth-"))
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), "--requirepass", REDIS_PASSWORD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: port_open(port), 15, "redis-server with a password")
        url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
        stack = make_stack(redis_url=url, SW_KAFKA_SASL_PASSWORD=SASL_PASSWORD, SW_KAFKA_SASL_USERNAME="svc",
                           SW_KAFKA_SSL_PASSWORD=SSL_PASSWORD)
        worker = stack.start_worker()
        stack.wait_logged(worker, "partitions_assigned")
        articles = make_articles(40, seed=71)
        values, keys = encode(articles)
        stack.produce(values[:20], keys[:20])
        wait_until(lambda: sum(stack.committed().values()) >= 20, 120, "the first articles")
        # A short Redis outage, so that error and retry lines (which quote connection errors) are logged too.
        proc.send_signal(19)  # SIGSTOP
        try:
            stack.produce(values[20:], keys[20:])
            wait_until(lambda: logged(worker, "batch_retry"), 60, "a batch_retry warning")
        finally:
            proc.send_signal(18)  # SIGCONT
        events, _ = stack.wait_accounted({a["id"] for a in articles}, dead=0, timeout=120)
        assert {a["id"] for a in articles} <= {e["article"]["id"] for e in events if e.get("article")}
        assert_alive(worker)
        assert worker.terminate() == 0
        text = worker.log_path.read_text(errors="replace")
        start = logged(worker, "starting")[0]["settings"]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    for secret in (REDIS_PASSWORD, SASL_PASSWORD, SSL_PASSWORD):
        assert secret not in text, f"{secret!r} appears in the worker log"
    assert start["redis_url"] == f"redis://:***@127.0.0.1:{port}/0", start["redis_url"]
    assert start["kafka_sasl_password"] == "**********" and start["kafka_ssl_password"] == "**********"
    print(f"secrets: {len(text.splitlines())} log lines, {len(logged(worker, 'batch_retry'))} batch_retry, "
          f"0 secrets; start line redis_url={start['redis_url']}")

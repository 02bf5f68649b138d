"""The local services the demo and tests start: a port taken after it was chosen does not break a start."""
import shutil
import socket

import pytest

from worker.adapters import local_services


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_a_port_taken_meanwhile_moves_the_service_to_another():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        offered = [busy, local_services.free_port()]
        tried = []

        def choose():
            tried.append(offered[len(tried)])
            return tried[-1]

        service = local_services._on_a_free_port(local_services._start_redis, None, choose=choose)
        try:
            assert tried == offered and service.port == offered[1]
            assert service.process.poll() is None
        finally:
            service.stop()

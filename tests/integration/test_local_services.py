"""The local services the demo and tests start: a port taken after it was chosen does not break a start, and
nothing started outlives what started it."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.adapters import local_services

pytestmark = pytest.mark.integration


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


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_a_dev_stack_that_fails_to_start_stops_what_it_started(monkeypatch):
    from worker import devstack

    started = []

    def redis_then_remember():
        service = local_services.start_redis()
        started.append(service)
        return service

    def broken_broker(**_):
        raise RuntimeError("tansu would not start")

    monkeypatch.delenv("SW_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing there: the stack starts its own
    monkeypatch.setattr(devstack, "start_redis", redis_then_remember)
    monkeypatch.setattr(devstack, "start_tansu", broken_broker)
    with pytest.raises(RuntimeError, match="tansu"):
        devstack.DevStack()
    (own,) = started
    assert own.process.poll() is not None and not local_services.port_open(own.port)


LINUX_ONLY = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux only (PR_SET_PDEATHSIG, /proc)")


@LINUX_ONLY
def test_a_child_started_by_spawn_ends_with_its_parent():
    """SIGKILL the parent: nothing of ours can run any more, the kernel sends the child SIGTERM."""
    assert _ends_with_its_parent("signal.SIGTERM")


@LINUX_ONLY
def test_a_stopped_service_ends_with_its_parent():
    """A fault test pauses Redis or the broker (SIGSTOP); should the test run die meanwhile, the service must
    not stay behind stopped for ever (a SIGTERM waits on a stopped process, a SIGKILL does not)."""
    assert _ends_with_its_parent("signal.SIGKILL", stopped=True)


def _ends_with_its_parent(death_signal: str, stopped: bool = False) -> bool:
    """Whether a child started by local_services.spawn with `death_signal` (and then stopped, if `stopped`) ends
    within 10 s of its parent's SIGKILL; it is killed in any case."""
    code = ("import signal, sys, time; from worker.adapters.local_services import spawn; "
            "child = spawn([sys.executable, '-c', 'import time; time.sleep(60)'], "
            f"{death_signal}); print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        if stopped:
            os.kill(child, signal.SIGSTOP)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.1)
        return not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie has ended (its parent, pid 1, reaps it)
    except FileNotFoundError:
        return False


_STOPS_WHILE_SPAWNING = """
import logging, signal, sys, threading, time
from worker.adapters import local_services
from worker.cli import _stop_on_sigterm
_stop_on_sigterm()  # how the commands stop
logging.basicConfig(stream=open("/dev/null", "w"))
def chatter():  # a library logging from its own thread, as kafka-python does
    while True:
        logging.getLogger("lib").warning("x")
        time.sleep(0.001)
threading.Thread(target=chatter, daemon=True).start()
print("ready", flush=True)
while True:
    local_services.spawn(["true"]).wait()
"""


@LINUX_ONLY
def test_a_command_stopped_while_it_starts_processes_stops():
    """A SIGTERM handler that raises inside the fork hooks was ignored there and left the logging lock held: the
    demo then went on and hung on kafka-python's next log line (seen as a SIGTERM test that ended 1 after 30 s);
    raised in a finalizer (`Popen.__del__`), it was ignored and the stop lost. `spawn` handles a signal that comes
    while it forks once the child is started, and a stop ignored elsewhere is sent again. Each try stops the
    command at a random moment of its loop; a thread logs meanwhile (the signal may be delivered to it)."""
    import random

    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", _STOPS_WHILE_SPAWNING], stdout=subprocess.PIPE,
                                cwd=Path(__file__).resolve().parents[2])
        try:
            proc.stdout.readline()
            time.sleep(random.uniform(0.1, 0.4))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signum)


@pytest.mark.parametrize("during", ["fork", "install"])
def test_spawn_puts_every_handler_back_and_leaves_no_child_to_no_one(monkeypatch, during):
    """A stop while `spawn` forks is handled on the way out, by the handler we had, and the child it just started
    is killed (no one else knows it); a stop while it installs its recorders leaves no recorder behind."""
    real_signal, real_popen = signal.signal, subprocess.Popen
    started = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in saved:
        real_signal(sig, _raise_stop)

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        if during == "fork":
            os.kill(os.getpid(), signal.SIGTERM)  # comes while the recorders are in place
        return proc

    def install(sig, handler):
        old = real_signal(sig, handler)
        if during == "install" and sig == signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGINT)  # pending when the next handler is set
        return old

    monkeypatch.setattr(local_services.subprocess, "Popen", popen)
    monkeypatch.setattr(local_services.signal, "signal", install)
    try:
        with pytest.raises(_Stop):
            local_services.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
        assert signal.getsignal(signal.SIGTERM) is _raise_stop and signal.getsignal(signal.SIGINT) is _raise_stop
        if during == "fork":
            assert started and started[0].poll() is not None  # killed, not left running
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for sig, handler in saved.items():
            real_signal(sig, handler)


def test_a_start_interrupted_while_waiting_for_the_service_stops_it_and_removes_its_files(tmp_path, monkeypatch):
    """Ctrl-C while a service comes up: the caller never gets the service to stop it."""
    workdir = tmp_path / "svc"
    workdir.mkdir()
    proc = subprocess.Popen(["sleep", "60"])
    service = local_services.LocalService("sleeper", proc, local_services.free_port(), workdir / "log", workdir)

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_services, "port_open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        local_services._wait_ready(service, timeout=5)
    assert proc.poll() is not None and not workdir.exists()


def test_the_demo_s_broker_check_takes_any_listed_server_and_a_name_that_does_not_resolve_as_silent():
    from worker.devstack import _broker_answers

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert _broker_answers(f"kafka.invalid:9092,127.0.0.1:{port}")
        assert not _broker_answers("kafka.invalid:9092") and not _broker_answers("no-port-here")
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6) as listening:
            try:
                listening.bind(("::1", 0))
            except OSError:  # no IPv6 loopback here
                return
            listening.listen()
            assert _broker_answers(f"[::1]:{listening.getsockname()[1]}")


def test_signals_during_the_stack_s_cleanup_are_delivered_after_it():
    """SIGTERM (its handler set here: a run in the background may have SIGINT ignored) waits for the block."""
    class Stopped(Exception):
        pass

    def stop(*_args):
        raise Stopped

    done = []
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            with local_services.stops_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                done.append("cleanup")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert done == ["cleanup"]

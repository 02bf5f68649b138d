"""`story-worker` command line: run the stream worker, batch mode, the demo, and operator helpers."""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click
import redis
import structlog
from pydantic import SecretStr, ValidationError

from . import __version__, logs
from .errors import DependencyUnavailable
from .settings import Settings

log = structlog.get_logger()


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = [f"  {_env_name(err['loc'])}: {err['msg']}" if err["loc"] else f"  {err['msg']}"
                 for err in exc.errors(include_input=False)]
        click.echo("invalid configuration:\n" + "\n".join(lines), err=True)  # values left out: secrets
        sys.exit(2)
    logs.configure(settings.log_format, settings.log_level)
    return settings


def _env_name(loc: tuple) -> str:
    """The environment variable a validation error is about (`max_batch` -> SW_MAX_BATCH)."""
    field = str(loc[0]) if loc else ""
    return field if field.isupper() else f"SW_{field.upper()}"


def _redis(settings: Settings) -> redis.Redis:
    """A client for REDIS_URL; a cluster client (same interface) when SW_REDIS_CLUSTER is set."""
    # The CA is for rediss:// (one manifest may serve both): redis-py refuses it on a plain connection.
    tls = ({"ssl_ca_certs": str(settings.redis_ssl_ca_certs)}
           if settings.redis_ssl_ca_certs and settings.redis_dsn.startswith("rediss://") else {})
    timeouts = {"socket_timeout": settings.redis_timeout_s, "socket_connect_timeout": settings.redis_timeout_s}
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(settings.redis_dsn, **timeouts, **tls)
    return redis.Redis.from_url(settings.redis_dsn, health_check_interval=30, **timeouts, **tls)


class _Commands(click.Group):
    """A dependency still unreachable when a command gives up ends it with one line (exit 1), not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DependencyUnavailable as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Commands)
@click.version_option(__version__)
def main() -> None:
    """Raw scraped news in, deduplicated entity-tagged story events out."""


class _StartupBeat:
    """While the broker cannot be reached at start: the liveness heartbeat (a restart would not bring the broker
    back), and a warning every 30 s."""

    def __init__(self, path: str):
        self.path, self.warned_at = path, 0.0

    def __call__(self, error: Exception) -> None:
        from .stream import touch_heartbeat

        touch_heartbeat(self.path)
        if time.monotonic() - self.warned_at >= 30:
            self.warned_at = time.monotonic()
            log.warning("waiting_for_broker", reason=repr(error))


@main.command()
def run() -> None:
    """Consume the input topic in a consumer group until SIGTERM/SIGINT."""
    from .adapters.kafka_io import wait_for_broker
    from .core.entities import EntityExtractor
    from .pipeline import Pipeline
    from .stream import StreamWorker, touch_heartbeat

    settings = _settings()
    # A heartbeat left by the previous run of this container (an emptyDir outlives a restart) must not pass the
    # startup probe while the models load: the first beat comes from this run.
    Path(settings.heartbeat_file).unlink(missing_ok=True)
    # Until the loop takes over, a stop ends the start (as PID 1 in a container, Python would ignore SIGTERM).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    log.info("starting", version=__version__, pid=os.getpid(), settings=settings.redacted())
    extractor = EntityExtractor(batch_size=settings.ner_batch_size)
    extractor.extract([("Warm-up", "The model loads before the worker joins its group.")])
    wait_for_broker(settings, timeout=None, waiting=_StartupBeat(settings.heartbeat_file))
    pipeline = Pipeline(settings, _redis(settings), settings.redis_namespace, live=True, extractor=extractor,
                        progress=functools.partial(touch_heartbeat, settings.heartbeat_file))
    pipeline.stories.warm_up()
    log.info("models_loaded", embedding_threads=pipeline.stories.embedding_threads)
    sys.exit(StreamWorker(settings, pipeline).run())


@main.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chunk", default=64, show_default=True, type=click.IntRange(min=1),
              help="Articles per pipeline batch (decisions do not depend on it).")
def batch(input_path: Path, output_path: Path, chunk: int) -> None:
    """Offline: decide every article of a JSON Lines file in order; one decision line per input line."""
    from .adapters.local_services import redis_answers, start_redis
    from .batch import run_batch

    if not output_path.resolve().parent.is_dir():
        raise click.BadParameter(f"no directory {output_path.resolve().parent}", param_hint="--output")
    settings = _settings()
    _stop_on_sigterm()
    own = None
    if not redis_answers(settings.redis_dsn):
        own = start_redis()
        settings = settings.model_copy(update={"redis_url": SecretStr(f"redis://{own.address}/0")})
        log.info("started_local_redis", address=own.address)
    try:
        counts = run_batch(settings, _redis(settings), input_path, output_path, chunk=chunk)
    finally:
        if own:
            own.stop()
    log.info("batch_done", input=str(input_path), output=str(output_path), **counts)


def _topic_configs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` pairs, as kafka-topics.sh takes them; anything else is a usage error (exit 2)."""
    configs = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not (sep and key.strip() and setting.strip()):
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx=ctx, param=param)
        configs[key.strip()] = setting.strip()
    return configs


@main.command()
@click.option("--partitions", default=4, show_default=True)
@click.option("--replication", default=1, show_default=True)
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", callback=_topic_configs,
              help="Topic config for the topics created, repeatable (e.g. min.insync.replicas=2).")
def topics(partitions: int, replication: int, configs: dict[str, str]) -> None:
    """Create the input, output and dead-letter topics if missing (existing ones are left as they are)."""
    from kafka.errors import KafkaError

    from .adapters.kafka_io import ensure_topics, wait_for_broker

    settings = _settings()
    wait_for_broker(settings, timeout=120)
    try:
        ensure_topics(settings, partitions, replication, configs)
    except KafkaError as exc:  # the broker refused them: a replication factor above its brokers, a bad config
        raise click.ClickException(f"topics not created: {exc!r}") from exc


@main.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key-field", default="url", show_default=True, help="JSON field used as message key.")
def produce(input_path: Path, key_field: str) -> None:
    """Publish each line of a JSON Lines file to the input topic (sample producer)."""
    from .adapters.kafka_io import Publisher, wait_for_broker

    settings = _settings()
    wait_for_broker(settings, timeout=120)
    records = []
    for line in input_path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            key = str(json.loads(line).get(key_field, "")).encode() or None
        except (ValueError, AttributeError):
            key = None
        records.append((settings.input_topic, key, line))
    publisher = Publisher(settings)
    try:
        log.info("produced", records=publisher.publish(records), topic=settings.input_topic)
    finally:
        publisher.close()


@main.command()
@click.option("--max-age", default=60.0, show_default=True, help="Seconds since the loop last turned.")
def check(max_age: float) -> None:
    """Liveness probe: exit 1 when the worker loop has not turned for --max-age seconds."""
    path = _settings().heartbeat_file
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError:
        click.echo(f"no heartbeat at {path}", err=True)
        sys.exit(1)
    if age > max_age:
        click.echo(f"heartbeat is {age:.0f}s old", err=True)
        sys.exit(1)
    click.echo(f"alive ({age:.1f}s)")


@main.command()
@click.option("--write/--check", "write", default=False, help="Write schemas/ or check it matches the models.")
@click.option("--dir", "directory", default="schemas", show_default=True, type=click.Path(path_type=Path))
def schemas(write: bool, directory: Path) -> None:
    """Export the JSON Schemas of the message models (or check that schemas/ is current)."""
    from .schema_export import check_schemas, write_schemas

    if write:
        for path in write_schemas(directory):
            click.echo(f"wrote {path}")
        return
    if not directory.is_dir():
        raise click.UsageError(f"no schemas directory at {directory} (run from the checkout, or pass --dir)")
    stale = check_schemas(directory)
    for name in stale:
        click.echo(f"stale: {directory / name}", err=True)
    sys.exit(1 if stale else 0)


@main.command()
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Articles to stream (default: the bundled samples).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes in the consumer group.")
def demo(input_path: Path | None, workers: int) -> None:
    """Start what is missing (broker, Redis), run real workers, stream articles in, print the stories."""
    from .demo import run_demo

    settings = _settings()  # a bad setting exits 2 and says which, before anything starts
    logs.configure("console" if sys.stderr.isatty() else "json", "WARNING")
    _stop_on_sigterm()
    sys.exit(run_demo(input_path, workers, settings))


def _stop_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) end the command as Ctrl-C does, through its cleanup (Python's default would skip it).

    The handler raises SystemExit wherever the main thread is. Where an exception cannot propagate (a finalizer
    such as `Popen.__del__`), Python ignores it and the stop would be lost: such a stop is sent again a moment
    later, when the thread is elsewhere. (While a process forks, `local_services.spawn` defers the signal: an
    exception ignored in the fork hooks would also leave the logging lock held.)"""
    code = 128 + signal.SIGTERM
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup it stays ignored
        signal.signal(signal.SIGHUP, lambda *_: sys.exit(code))  # the terminal closed: the same cleanup
    ignore = sys.unraisablehook

    def again(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit) and unraisable.exc_value.code == code:
            try:
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
            except RuntimeError:  # the interpreter is shutting down: the stop is under way
                pass
        ignore(unraisable)

    sys.unraisablehook = again


if __name__ == "__main__":
    main()

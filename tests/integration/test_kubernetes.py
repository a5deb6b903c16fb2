"""deploy/kubernetes, checked without a cluster: each overlay is rendered (tests/kustomize.py), every object is
validated against the Kubernetes API's schemas (kubernetes-validate, offline) and the Prometheus Operator's objects
against the fields they use; then the pod is laid out on disk (the image's files from the Dockerfile, the
ConfigMaps where they are mounted) and its gateway.yaml and policies are checked there, the numbers that must agree
(the grace period and the drain, the probes and the app's paths, the mounts and the paths the gateway writes) are
compared, and the small overlay's gateway is served to answer its probes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from gateway.config import GatewayConfig, load_config
from gateway.server.watch import CUT_MARGIN_S
from tests import kustomize
from tests.conftest import ROOT, running
from tests.dockerfile import Dockerfile, assemble
from tests.services import drop_schema, require_postgres, require_redis

KUBERNETES = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DOCKERFILE = Dockerfile((ROOT / "Dockerfile").read_text())
BIN = Path(sys.executable).parent
OVERLAYS = ("small", "production")
# The oldest Kubernetes the manifests are written for: preStop's `sleep` action (1.30), the PDB's
# unhealthyPodEvictionPolicy (1.31). They are validated against it and against the newest schemas the package has.
OLDEST = "1.31"
VERSIONS = (OLDEST, str(kubernetes_validate.latest_version()))
# What each overlay's secrets.env holds in the tests (every key of its secrets.env.example must be here).
SECRETS = {
    "GATEWAY_KEY": "sk-k8s-client",
    "GATEWAY_ADMIN_KEY": "sk-k8s-admin",
    "OPENAI_API_KEY": "",
    "GATEWAY_REDIS_URL": "redis://redis.example.svc:6379/0",
    "GATEWAY_DATABASE_URL": "postgresql://gateway:secret@postgres.example.svc:5432/gateway",
}
# After the drain, the gateway flushes its telemetry before it exits (gateway/runtime.py Gateway.close): the queue
# into the outboxes (quick: memory), then closes each bounded at 5 s (the event queue, the outboxes together, the
# Responses API's conversations). The grace period must leave room for them with the store hung.
SHUTDOWN_FLUSH_S = 15.0


# -- rendering -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects, rendered from a copy of deploy/kubernetes with a secrets.env made from the example."""
    tree = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets.env"))
    out = {}
    for overlay in OVERLAYS:
        folder = tree / "overlays" / overlay
        keys = kustomize.env_file((folder / "secrets.env.example").read_text())
        assert set(keys) <= set(SECRETS), f"{overlay}: secrets.env.example has keys the tests do not know"
        (folder / "secrets.env").write_text("".join(f"{key}={SECRETS[key]}\n" for key in keys))
        out[overlay] = kustomize.render(folder)
    return out


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} {name or ''}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["gateway"]
    return dict(containers[0])


def test_the_secret_files_stay_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(KUBERNETES / "overlays" / "small" / "secrets.env")], cwd=ROOT
    )
    assert ignored.returncode == 0, "deploy/kubernetes/overlays/*/secrets.env must be ignored by git"
    for overlay in OVERLAYS:
        example = kustomize.env_file((KUBERNETES / "overlays" / overlay / "secrets.env.example").read_text())
        assert example["GATEWAY_KEY"] == "", "the example must not ship a usable client key"


# -- the Kubernetes API's schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    """Strict: an unknown field (a typo, a field of a newer version) fails as the API server would refuse it."""
    for obj in rendered[overlay]:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in the package (test_prometheus_operator_objects_are_well_formed)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc}")


# The fields of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) that the manifests use, as the CRDs define
# them; anything else is refused here, so a typo cannot pass as an unknown field the operator would ignore.
_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _LABELS},
    "additionalProperties": False,
}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": _LABELS},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}
_RULE = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION,
        "labels": {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"enum": ["info", "warning", "critical"]}},
            "additionalProperties": {"type": "string"},
        },
        "annotations": {
            "type": "object",
            "required": ["summary", "description"],
            "additionalProperties": {"type": "string"},
        },
    },
}
RULE_GROUPS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["name", "rules"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "interval": _DURATION, "rules": {"type": "array", "items": _RULE}},
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {"groups": RULE_GROUPS},
        },
    },
}


def test_prometheus_operator_objects_are_well_formed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["production"]
    monitor = one(objects, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    rule = one(objects, "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    # The same rules as deploy/prometheus/alerts.yaml, which Prometheus without the operator loads.
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    groups = rule["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert len(set(alerts)) == len(alerts), "two alerts of one name"
    for group in groups:
        for each in group["rules"]:
            try:
                promql_parser.parse(each["expr"])
            except ValueError as exc:
                pytest.fail(f"{each['alert']}: {exc}")


def test_the_alerts_file_is_a_prometheus_rule_file() -> None:
    jsonschema.validate(yaml.safe_load(ALERTS.read_text()), {
        "type": "object", "required": ["groups"], "additionalProperties": False, "properties": {"groups": RULE_GROUPS},
    })  # fmt: skip


# -- the objects agree with each other ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_ports_and_scalers_agree(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"the Service targets {port['targetPort']}, which the pod does not name"
    for kind in ("PodDisruptionBudget",):
        for obj in (o for o in objects if o["kind"] == kind):
            assert obj["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
        # A CPU target means nothing without a CPU request to take a share of.
        assert container(objects)["resources"]["requests"]["cpu"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    for volume in volumes.values():
        for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if field in volume:
                one(objects, kind, volume[field].get("name") or volume[field].get("secretName"))
        if "persistentVolumeClaim" in volume:
            one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    for env in container(objects)["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and not ref.get("optional"):
            assert ref["key"] in one(objects, "Secret", ref["name"])["data"], f"{env['name']}: no such key"


def test_production_runs_replicas_that_stay_up(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["production"]
    assert one(objects, "Deployment")["spec"]["replicas"] >= 3
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 3
    pdb = one(objects, "PodDisruptionBudget")
    # One at a time: with the HPA's minimum of 3, two keep serving through a node drain.
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) >= 2
    strategy = one(objects, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_small_runs_one_sqlite_writer_on_a_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["small"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Never two pods on one SQLite file (nor a ReadWriteOnce claim): the old one stops before the new one starts.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    data = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "data")
    assert set(data) == {"name", "persistentVolumeClaim"}
    assert not [o for o in objects if o["kind"] in ("HorizontalPodAutoscaler", "ServiceMonitor")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_runs_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    pod = pod_spec(objects)
    gateway = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(DOCKERFILE.final.user.split(":")[0]) != 0
    assert pod["automountServiceAccountToken"] is False
    security = gateway["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = gateway["resources"]
    for needed in (resources["requests"]["cpu"], resources["requests"]["memory"], resources["limits"]["memory"]):
        assert needed


# -- the pod: its files, its config, its shutdown ------------------------------------------------------------------


@dataclass
class Pod:
    root: Path  # the container's `/`, on this machine
    workdir: Path
    config: Path  # --config, under root
    env: dict[str, str]
    mounts: dict[str, dict[str, Any]]  # mountPath -> the volume (with the mount's readOnly)
    objects: list[dict[str, Any]]  # the overlay's, which it was laid out from

    def host(self, path: str | PurePosixPath) -> Path:
        return self.root / str(path).lstrip("/")

    def mount_of(self, path: str | PurePosixPath) -> dict[str, Any] | None:
        """The volume mounted where this container path lies, or None (the read-only root filesystem)."""
        best = None
        for mount_path in self.mounts:
            if PurePosixPath(path).is_relative_to(mount_path) and (best is None or len(mount_path) > len(best)):
                best = mount_path
        return self.mounts[best] if best is not None else None


def lay_out(objects: list[dict[str, Any]], root: Path) -> Pod:
    """The gateway container's filesystem: the image's files, each ConfigMap's keys as files where it is mounted,
    empty folders for the other volumes. Absolute paths in the config are moved under `root` (as in_image does for
    test_deploy), so that `gateway check` reads what the pod would."""
    stage = DOCKERFILE.final
    assemble(DOCKERFILE, ROOT, root)
    spec = pod_spec(objects)
    gateway = container(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, dict[str, Any]] = {}
    for mount in gateway["volumeMounts"]:
        assert "subPath" not in mount, "a subPath mount is never updated by the kubelet"
        volume = volumes[mount["name"]]
        mounts[mount["mountPath"]] = {**volume, "readOnly": mount.get("readOnly", False)}
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in one(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (target / key).write_text(text)
    moved = re.compile(r"(?<![\w.])(" + "|".join(re.escape(p) for p in [*mounts, stage.workdir]) + r")(?=/|\b)")
    args = gateway["args"]
    config = root / args[args.index("--config") + 1].lstrip("/")
    config.write_text(moved.sub(lambda m: str(root) + m.group(1), config.read_text()))
    env = {k: v for k, v in stage.env.items() if k != "PATH"}
    env |= {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(root / "tmp")}
    for each in gateway["env"]:
        if "value" in each:
            env[each["name"]] = each["value"]
            continue
        ref = each["valueFrom"]["secretKeyRef"]
        data = kustomize.secret_data(one(objects, "Secret", ref["name"]))
        if ref["key"] in data:
            env[each["name"]] = data[ref["key"]]
    return Pod(root, root / stage.workdir.lstrip("/"), config, env, mounts, objects)


@pytest.fixture(params=OVERLAYS)
def pod(request: pytest.FixtureRequest, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> Pod:
    return lay_out(rendered[request.param], tmp_path / "pod")


def loaded(pod: Pod) -> GatewayConfig:
    return load_config(str(pod.config), env=pod.env)


def in_container(pod: Pod, path: Path) -> PurePosixPath:
    return PurePosixPath("/", str(path.relative_to(pod.root))) if path.is_relative_to(pod.root) else PurePosixPath(path)


def test_the_configmaps_config_and_policies_check_in_the_pod(pod: Pod) -> None:
    checked = subprocess.run(
        [str(BIN / "gateway"), "check", "--config", str(pod.config)],
        cwd=pod.workdir, env=pod.env, capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = loaded(pod)
    assert config.policies.paths, "the policies ConfigMap is mounted for a reason"
    for folder in config.policies.paths:  # (their tests run on policies/, of which these are copies)
        result = subprocess.run(
            [str(BIN / "gateway"), "policy", "check", folder], cwd=pod.workdir, env=pod.env, capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0, f"policy check: {result.stdout}{result.stderr}"
    # What the gateway reads at start is in the image or on a mount.
    for path in (config.telemetry.pricing_file, config.guardrails.abuse_prompts_file, *config.policies.paths):
        assert config.resolve_path(path).exists(), f"{in_container(pod, config.resolve_path(path))} is not in the pod"


def test_what_the_gateway_writes_is_on_a_writable_volume(pod: Pod) -> None:
    """The root filesystem is read-only: the spool, a SQLite store and the temporary folder (the metrics of several
    workers, tiktoken's cache) must each be on a volume mounted read-write."""
    config = loaded(pod)
    written = [in_container(pod, config.resolve_path(config.telemetry.spool_dir)), PurePosixPath("/tmp")]
    if config.telemetry.store.startswith("sqlite:"):
        db = Path(config.telemetry.store.removeprefix("sqlite:///"))
        written.append(in_container(pod, config.resolve_path(str(db)).parent))
    assert "TMPDIR" not in pod.env
    for path in written:
        mount = pod.mount_of(path)
        assert mount is not None, f"{path} is on the read-only root filesystem"
        assert not mount["readOnly"], f"{path} is on a read-only mount"
        assert "emptyDir" in mount or "persistentVolumeClaim" in mount


def test_the_policies_update_in_place_and_the_config_rolls_the_pods(pod: Pod) -> None:
    """The policies ConfigMap keeps its name, so an edit reaches the mounted folder (the kubelet's symlink swap,
    hot-reloaded: tests/unit/policy/test_registry.py); the config's name carries a hash of its content, so an edit
    makes a new ConfigMap and a rollout (the config is read at start)."""
    config = loaded(pod)
    assert config.policies.reload
    for path in config.policies.paths:
        mount = pod.mount_of(in_container(pod, config.resolve_path(path)))
        assert mount is not None
        assert mount["configMap"]["name"] == "gateway-policies"
    config_mount = pod.mount_of(in_container(pod, pod.config))
    assert config_mount is not None
    assert re.fullmatch(r"gateway-config-[0-9a-f]{10}", config_mount["configMap"]["name"])


def test_the_grace_period_outlasts_prestop_drain_and_flush(pod: Pod) -> None:
    spec = pod_spec(pod.objects)
    gateway = container(pod.objects)
    pre_stop = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    server = loaded(pod).server
    needed = pre_stop + server.drain_delay_s + server.drain_timeout_s + CUT_MARGIN_S + SHUTDOWN_FLUSH_S
    assert spec["terminationGracePeriodSeconds"] > needed, (
        f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} <= preStop {pre_stop} + drain_delay_s "
        f"{server.drain_delay_s} + drain_timeout_s {server.drain_timeout_s} + {CUT_MARGIN_S} + {SHUTDOWN_FLUSH_S}"
    )
    # The endpoints have seen the pod terminating by the end of preStop: at least one readiness period.
    assert pre_stop >= gateway["readinessProbe"]["periodSeconds"]


def test_the_probes_ask_what_they_mean(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Liveness and startup ask whether the process answers (never the dependencies: a restart cures none of their
    outages); readiness asks whether this replica can serve (gateway/readiness.py)."""
    for objects in rendered.values():
        gateway = container(objects)
        for probe in ("startupProbe", "livenessProbe"):
            assert gateway[probe]["httpGet"]["path"] == "/health/live"
        assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        # The readiness pings of the store and Redis are bounded at 0.5 s: a hung one never times the probe out.
        assert gateway["readinessProbe"]["timeoutSeconds"] >= 1
        # Startup may run the store's migrations: liveness does not count until it is over.
        startup = gateway["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_small_overlays_gateway_answers_its_probes_and_scrape(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The small overlay's config, served (SQLite in the pod's /data): every probe's path and the ServiceMonitor's
    answer 200 on the port the probes name."""
    objects = rendered["small"]
    pod = lay_out(objects, tmp_path / "pod")
    config = loaded(pod)
    gateway = container(objects)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    probes = [gateway[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    for probe in probes:
        assert ports[probe["port"]] == config.server.port, "the probe asks a port the gateway does not listen on"
    scrape = one(rendered["production"], "ServiceMonitor")["spec"]["endpoints"]
    with running(config) as (url, _):
        for path in [p["path"] for p in probes] + [e["path"] for e in scrape]:
            response = httpx.get(url + path, timeout=10)
            assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"


def test_the_production_overlays_gateway_serves_on_redis_and_postgres(tmp_path: Path) -> None:
    """The production overlay rendered with its Secret pointing at a real Redis and PostgreSQL: its gateway starts,
    is ready with both reachable, and serves the client's key from the Secret."""
    schema = f"gw_k8s_{uuid.uuid4().hex[:10]}"
    dsn = require_postgres()
    secrets = {**SECRETS, "GATEWAY_REDIS_URL": require_redis(), "GATEWAY_DATABASE_URL": f"{dsn}?schema={schema}"}
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets.env"))
    folder = tree / "overlays" / "production"
    keys = kustomize.env_file((folder / "secrets.env.example").read_text())
    (folder / "secrets.env").write_text("".join(f"{key}={secrets[key]}\n" for key in keys))
    pod = lay_out(kustomize.render(folder), tmp_path / "pod")
    try:
        with running(loaded(pod)) as (url, _):
            ready = httpx.get(f"{url}/health/ready", timeout=10)
            assert ready.status_code == 200, ready.text
            assert (ready.json()["checks"]["state"], ready.json()["checks"]["store"]) == ("ok", "ok")
            answer = httpx.post(
                f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {SECRETS['GATEWAY_KEY']}"},
                json={"model": "demo", "messages": [{"role": "user", "content": "hello"}]}, timeout=10,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
    finally:
        drop_schema(dsn, schema)


def test_the_shipped_policies_are_the_repositorys() -> None:
    """deploy/kubernetes/base/policies are copies (kustomize reads only below its folder): kept identical."""
    for copy in (KUBERNETES / "base" / "policies").iterdir():
        assert copy.read_text() == (ROOT / "policies" / copy.name).read_text(), copy.name


# -- the kustomize subset ------------------------------------------------------------------------------------------


def test_kustomize_subset_merges_lists_by_key_and_refuses_the_rest(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [d.yaml]\n")
    (base / "d.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {
            "containers": [
                {"name": "c", "image": "img:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }}},
    }))  # fmt: skip
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\npatches: [{path: p.yaml}]\nimages: [{name: img, newName: reg/img, newTag: '2'}]\n"
    )
    (overlay / "p.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "c", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}],
            "volumes": [{"name": "v", "emptyDir": None, "persistentVolumeClaim": {"claimName": "pvc"}}],
        }}},
    }))  # fmt: skip
    (deployment,) = kustomize.render(overlay)
    spec = deployment["spec"]["template"]["spec"]
    # The patch's items first, then the base's others (kustomize's order); null deletes a field.
    assert spec["containers"][0]["env"] == [{"name": "B", "value": "3"}, {"name": "C", "value": "4"},
                                            {"name": "A", "value": "1"}]  # fmt: skip
    assert spec["volumes"] == [{"name": "v", "persistentVolumeClaim": {"claimName": "pvc"}}]
    assert spec["containers"][0]["image"] == "reg/img:2"
    (overlay / "kustomization.yaml").write_text("resources: [../base]\nnamePrefix: x-\n")
    with pytest.raises(kustomize.Unsupported, match="namePrefix"):
        kustomize.render(overlay)

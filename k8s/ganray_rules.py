"""ganray's deployment rules: what k8s/README.md promises about every manifest.

No trials on the head; Guaranteed-QoS Ray Pods (requests = limits); GPU workers
that tolerate the GPU taint and have CPUs for their trials; in-tree autoscaler
v2; token auth from a Secret; secrets only from Secrets; a /dev/shm that holds
the object store; images of the pinned Ray; a RayJob that shuts down, times out
and retries, with an entrypoint that survives KubeRay's shell and names files
the image has. Every rule returns ``"field.path: problem"`` strings.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from kuberay_rules import groups, pod_spec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the entrypoint is checked with ganray's own CLI parser and space loader
IMAGE_REPO_DIR = "/home/ray/ganray"  # where the Dockerfile copies this repository
GPU = "nvidia.com/gpu"
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY)", re.I)
PLACEHOLDER = re.compile(r"^<[^<>]+>$")
SHELL_SYNTAX = set(";&|<>$`'\"\\(){}*?!#~\n")
_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "m": 1e-3,
}


def quantity(q: Any) -> float:
    """A Kubernetes quantity ("8Gi", "500m", 2) as a number (bytes, cores)."""
    m = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", str(q).strip())
    if not m or m.group(2) not in ("", *_UNITS):
        raise ValueError(f"not a quantity: {q!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


def _ray_container(group: dict) -> dict:
    return (pod_spec(group).get("containers") or [{}])[0]


def _resource_rules(path: str, group: dict) -> list[str]:
    res = _ray_container(group).get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    where = f"{path}.template.spec.containers[0].resources"
    out = [f"{where}.limits.{k}: must be set" for k in ("cpu", "memory") if k not in limits]
    for key in sorted(set(limits) | set(requests)):
        if key not in limits or key not in requests or quantity(limits[key]) != quantity(requests[key]):
            out.append(f"{where}.requests.{key}: must equal limits.{key} (Guaranteed QoS)")
    return out


def _shm_rules(path: str, group: dict) -> list[str]:
    """/dev/shm is a memory emptyDir that holds the object store and fits the memory limit."""
    pod, container = pod_spec(group), _ray_container(group)
    where = f"{path}.template.spec"
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"), None)
    if mount is None:
        return [f"{where}.containers[0].volumeMounts: mount a Memory emptyDir at /dev/shm (with a sizeLimit)"]
    volumes = pod.get("volumes") or []
    i = next((i for i, v in enumerate(volumes) if v.get("name") == mount.get("name")), None)
    empty = (volumes[i].get("emptyDir") or {}) if i is not None else {}
    if empty.get("medium") != "Memory" or "sizeLimit" not in empty:
        return [f"{where}.volumes: /dev/shm volume {mount.get('name')!r} must be an emptyDir "
                "with medium Memory and a sizeLimit"]  # fmt: skip
    shm = quantity(empty["sizeLimit"])
    memory = quantity(((container.get("resources") or {}).get("limits") or {}).get("memory", 0))
    store = (group.get("rayStartParams") or {}).get("object-store-memory")
    out = []
    if memory and shm >= memory:
        out.append(f"{where}.volumes[{i}].emptyDir.sizeLimit: {empty['sizeLimit']} must be below the "
                   "memory limit (a memory emptyDir counts against it)")  # fmt: skip
    if store is not None and float(store) > shm:
        out.append(f"{path}.rayStartParams.object-store-memory: {store} bytes does not fit /dev/shm "
                   f"({empty['sizeLimit']})")  # fmt: skip
    return out


def _gpu_rules(path: str, group: dict) -> list[str]:
    gpus = quantity(((_ray_container(group).get("resources") or {}).get("limits") or {}).get(GPU, 0))
    tolerated = any(t.get("key") == GPU for t in pod_spec(group).get("tolerations") or [])
    if gpus and not tolerated:
        return [f"{path}.template.spec.tolerations: a GPU group must tolerate the {GPU} taint"]
    return []


def _replica_rules(path: str, group: dict) -> list[str]:
    lo, hi, n = group.get("minReplicas", 0), group.get("maxReplicas"), group.get("replicas", 0)
    if hi is None:
        return [f"{path}.maxReplicas: must be set (the autoscaler's upper bound)"]
    return [] if lo <= n <= hi else [f"{path}.replicas: {n} is outside [minReplicas {lo}, maxReplicas {hi}]"]


def _image_rules(spec: dict, base: str) -> list[str]:
    """Every Ray container runs one image; a tagged image carries the cluster's rayVersion."""
    images = {_ray_container(g).get("image") for _, g in groups(spec, base)}
    if len(images) != 1:
        return [f"{base}: head and workers must run one image, got {sorted(map(str, images))}"]
    image = images.pop() or ""
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if tag and spec.get("rayVersion") and f"ray{spec['rayVersion']}-" not in tag:
        return [f"{base}.headGroupSpec.template.spec.containers[0].image: tag {tag!r} is not of "
                f"rayVersion {spec.get('rayVersion')} (expected ...ray{spec.get('rayVersion')}-pyNNN-gpu)"]  # fmt: skip
    return []


def cluster_spec_rules(spec: dict, base: str) -> list[str]:
    """The cluster-shape rules (RayCluster.spec or RayJob.spec.rayClusterSpec)."""
    out = []
    if (spec["headGroupSpec"].get("rayStartParams") or {}).get("num-cpus") != "0":
        out.append(f'{base}.headGroupSpec.rayStartParams.num-cpus: must be "0" (no trials on the head)')
    if (
        not spec.get("enableInTreeAutoscaling")
        or (spec.get("autoscalerOptions") or {}).get("version") != "v2"
    ):
        out.append(f"{base}.autoscalerOptions.version: in-tree autoscaling with version v2 is expected")
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token" or not auth.get("secretName"):
        out.append(f"{base}.authOptions: mode token with a secretName (the token's Secret) is expected")
    workers = spec.get("workerGroupSpecs") or []
    if not any(quantity(((_ray_container(g).get("resources") or {}).get("limits") or {}).get(GPU, 0))
               for g in workers):  # fmt: skip
        out.append(f"{base}.workerGroupSpecs: no worker group has {GPU} limits")
    for path, g in groups(spec, base):
        out += _resource_rules(path, g) + _shm_rules(path, g) + _gpu_rules(path, g)
        out += [] if path.endswith("headGroupSpec") else _replica_rules(path, g)
    return out + _image_rules(spec, base)


def env_secret_rules(obj: dict) -> list[str]:
    """Secret-looking env vars come from Secrets, never as literal values in a manifest."""
    out = []
    for path, value in _walk(obj, ""):
        if path.endswith(".env") and isinstance(value, list):
            for i, e in enumerate(value):
                if isinstance(e, dict) and SECRET_NAME.search(e.get("name", "")) and "value" in e:
                    out.append(
                        f"{path}[{i}].value: {e['name']} must come from a Secret (valueFrom.secretKeyRef)"
                    )
    return out


def _walk(node: Any, path: str):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _parse_entrypoint(argv: list[str]) -> tuple[Any, Any]:
    """(args, space) as `python -m ganray.tune` reads them before it starts Ray; SpaceError/ValueError
    when it would refuse them. The --space path inside the image is read from this checkout."""
    from ganray.tune.__main__ import parse_args
    from ganray.tune.space import load_space

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parse_args(argv[3:])
    except SystemExit:
        raise ValueError(err.getvalue().strip().splitlines()[-1]) from None
    if not args.space.startswith(IMAGE_REPO_DIR + "/"):
        raise ValueError(
            f"--space {args.space!r} is not under the image's copy of this repo, {IMAGE_REPO_DIR}/"
        )
    local = REPO / args.space[len(IMAGE_REPO_DIR) + 1 :]
    return args, load_space(str(local), args.overrides, args.num_samples)


def entrypoint_rules(spec: dict) -> list[str]:
    """The entrypoint: plain words (KubeRay splices it unquoted into a shell), `python -m
    ganray.tune` with arguments and a space it accepts, remote storage, and trials that fit
    the GPU workers."""
    from ganray.config import ConfigError

    entry = spec.get("entrypoint", "")
    bad = sorted(SHELL_SYNTAX & set(entry))
    if bad:
        return [
            f"spec.entrypoint: shell syntax {''.join(bad)!r}: KubeRay runs it inside its own shell command"
        ]
    argv = shlex.split(entry)
    if argv[:3] != ["python", "-m", "ganray.tune"]:
        return [f"spec.entrypoint: must start with 'python -m ganray.tune', got {' '.join(argv[:3])!r}"]
    try:
        args, space = _parse_entrypoint(argv)
    except (ValueError, ConfigError) as e:
        return [f"spec.entrypoint: ganray.tune would refuse it: {e}"]
    if "://" not in args.storage:
        return ["spec.entrypoint: --storage must be a URI every node reaches (s3://bucket/prefix)"]
    train = space.trial_config({}).train
    return _fit_rules(spec["rayClusterSpec"], args.max_concurrent, train.workers, train.cpus_per_worker)


def _fit_rules(cluster: dict, concurrent: int, per_trial: int, cpus_each: float) -> list[str]:
    """Each GPU runs one Train worker with train.cpus_per_worker CPUs; the search asks for no
    more trials at once than maxReplicas x GPUs can hold."""
    out, capacity = [], 0
    for i, g in enumerate(cluster.get("workerGroupSpecs") or []):
        limits = (_ray_container(g).get("resources") or {}).get("limits") or {}
        gpus = int(quantity(limits.get(GPU, 0)))
        capacity += gpus * int(g.get("maxReplicas", 0))
        if gpus and quantity(limits.get("cpu", 0)) < gpus * cpus_each:
            out.append(f"spec.rayClusterSpec.workerGroupSpecs[{i}].template.spec.containers[0].resources."
                       f"limits.cpu: {gpus} GPUs x train.cpus_per_worker {cpus_each:g} need more CPUs")  # fmt: skip
    if concurrent < 1:
        out.append(
            "spec.entrypoint: --max-concurrent N is needed (a cluster scaled down has no GPUs to count)"
        )
    elif concurrent * per_trial > capacity:
        out.append(f"spec.entrypoint: --max-concurrent {concurrent} x train.workers {per_trial} exceeds "
                   f"the {capacity} GPUs of maxReplicas")  # fmt: skip
    return out


def rayjob_rules(spec: dict) -> list[str]:
    """The RayJob brings its own cluster and ends: it shuts that down, has a deadline and a retry budget."""
    if "rayClusterSpec" not in spec:
        return ["spec.rayClusterSpec: must be set (the search's own cluster, shut down when it ends)"]
    out = []
    if spec.get("shutdownAfterJobFinishes") is not True:
        out.append("spec.shutdownAfterJobFinishes: must be true (GPUs are freed when the search ends)")
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
        if key not in spec:
            out.append(f"spec.{key}: must be set")
    env = (yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}).get("env_vars") or {}
    out += [
        f"spec.runtimeEnvYAML.env_vars.{k}: secrets come from Secrets" for k in env if SECRET_NAME.search(k)
    ]
    return out + entrypoint_rules(spec) + cluster_spec_rules(spec["rayClusterSpec"], "spec.rayClusterSpec")


def ganray_rules(obj: dict) -> list[str]:
    """Problems of a RayCluster or RayJob against ganray's deployment rules."""
    spec = obj.get("spec") or {}
    out = env_secret_rules(obj)
    if obj["kind"] == "RayJob":
        return out + rayjob_rules(spec)
    return out + cluster_spec_rules(spec, "spec")


def core_object_rules(obj: dict) -> list[str]:
    """Secrets in the repo hold only <placeholders>; ConfigMaps hold nothing secret-looking."""
    out = env_secret_rules(obj)
    if obj.get("kind") == "Secret":
        for field in ("stringData", "data"):
            for k, v in (obj.get(field) or {}).items():
                if not PLACEHOLDER.match(str(v)):
                    out.append(f"{field}.{k}: a Secret in the repository holds only <placeholders>")
    if obj.get("kind") == "ConfigMap":
        out += [
            f"data.{k}: secret-looking key in a ConfigMap"
            for k in obj.get("data") or {}
            if SECRET_NAME.search(k)
        ]
    return out

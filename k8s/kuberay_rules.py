"""KubeRay's rules that its CRD schema cannot express.

They follow KubeRay v1.7.0's ray-operator/controllers/ray/utils/validation.go:
the operator rejects such objects at reconcile time, long after `kubectl apply`
said "created". Every rule returns ``"field.path: problem"`` strings.
"""

from __future__ import annotations

import re

import yaml

MIN_TOKEN_AUTH_RAY = (2, 52, 0)  # KubeRay: authOptions.mode token needs Ray >= 2.52.0
MIN_K8S_AUTH_RAY = (2, 55, 0)
NAME_LIMITS = {"RayCluster": 53, "RayJob": 47}  # MaxRayClusterNameLength, MaxRayJobNameLength
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def version_tuple(v: str) -> tuple[int, ...] | None:
    """ "2.60.0" -> (2, 60, 0); None when it is not a version."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?.*", str(v))
    return tuple(int(x or 0) for x in m.groups()) if m else None


def env_by_name(container: dict) -> dict[str, dict]:
    """A container's env entries by name."""
    return {e.get("name"): e for e in container.get("env") or []}


def groups(spec: dict, base: str) -> list[tuple[str, dict]]:
    """(path, group) of the head group and every worker group."""
    out = [(f"{base}.headGroupSpec", spec.get("headGroupSpec") or {})]
    out += [(f"{base}.workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs") or [])]
    return out


def pod_spec(group: dict) -> dict:
    """The Pod spec of a head or worker group ({} when missing)."""
    return (group.get("template") or {}).get("spec") or {}


def _name_rules(obj: dict) -> list[str]:
    name, kind = (obj.get("metadata") or {}).get("name", ""), obj["kind"]
    out = []
    if len(name) > NAME_LIMITS[kind]:
        out.append(f"metadata.name: {kind} name should be no more than {NAME_LIMITS[kind]} characters")
    if not DNS1035.match(name):
        out.append(f"metadata.name: {kind} name {name!r} should be a valid DNS-1035 label")
    return out


def _group_rules(spec: dict, base: str, autoscaling: bool) -> list[str]:
    out = []
    for path, g in groups(spec, base):
        is_head = path.endswith("headGroupSpec")
        params = g.get("rayStartParams") or {}
        if not pod_spec(g).get("containers"):
            out.append(f"{path}.template.spec.containers: needs at least one container")
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and g.get("resources"):
            out.append(f"{path}.resources: resources set both in rayStartParams and resources; use only one")
        if "labels" in params:
            out.append(f"{path}.rayStartParams.labels: not supported; use the group's labels field")
        if is_head:
            continue
        lo, hi = g.get("minReplicas"), g.get("maxReplicas")
        if not autoscaling and (lo is None or hi is None):
            out.append(f"{path}: must set both minReplicas and maxReplicas when autoscaling is disabled")
        for key, v in (("minReplicas", lo), ("maxReplicas", hi)):
            if v is not None and v < 0:
                out.append(f"{path}.{key}: negative ({v})")
        if lo is not None and hi is not None and lo > hi:
            out.append(f"{path}.minReplicas: {lo} is greater than maxReplicas {hi}")
    return out


def _autoscaler_rules(spec: dict, base: str) -> list[str]:
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    opts = spec.get("autoscalerOptions") or {}
    head_env = env_by_name(((pod_spec(spec.get("headGroupSpec") or {}).get("containers")) or [{}])[0])
    v2_env = head_env.get("RAY_enable_autoscaler_v2", {}).get("value")
    out = []
    if not autoscaling and v2_env in ("1", "true"):
        out.append(f"{base}.enableInTreeAutoscaling: RAY_enable_autoscaler_v2={v2_env} needs it true")
    if autoscaling and opts.get("version") and "RAY_enable_autoscaler_v2" in head_env:
        out.append(
            f"{base}.autoscalerOptions.version: set with the head env RAY_enable_autoscaler_v2; use one"
        )
    if autoscaling and opts.get("version") == "v2":
        for path, g in groups(spec, base):
            if pod_spec(g).get("restartPolicy") not in (None, "", "Never"):
                out.append(f"{path}.template.spec.restartPolicy: must be Never or unset with autoscaler v2")
    if (opts.get("idleTimeoutSeconds") or 0) < 0:
        out.append(f"{base}.autoscalerOptions.idleTimeoutSeconds: must be non-negative")
    return out


def _auth_rules(spec: dict, base: str) -> list[str]:
    auth = spec.get("authOptions") or {}
    k8s_auth = bool(auth.get("enableK8sTokenAuth"))
    if auth.get("mode") != "token":
        return [f"{base}.authOptions.enableK8sTokenAuth: needs authOptions.mode token"] if k8s_auth else []
    version = version_tuple(spec.get("rayVersion", ""))
    if not spec.get("rayVersion"):
        return [f"{base}.rayVersion: authOptions.mode is token but rayVersion is not set (needs >= 2.52.0)"]
    if version is None:
        return [f"{base}.rayVersion: {spec['rayVersion']!r} is not a version"]
    out = []
    if version < MIN_TOKEN_AUTH_RAY:
        out.append(f"{base}.rayVersion: token auth needs Ray >= 2.52.0, got {spec['rayVersion']}")
    if k8s_auth and version < MIN_K8S_AUTH_RAY:
        out.append(f"{base}.rayVersion: enableK8sTokenAuth needs Ray >= 2.55.0, got {spec['rayVersion']}")
    if k8s_auth and auth.get("secretName"):
        out.append(f"{base}.authOptions.secretName: cannot be set with enableK8sTokenAuth")
    return out


def cluster_spec_rules(spec: dict, base: str) -> list[str]:
    """KubeRay's ValidateRayClusterSpec (the parts this deployment can hit)."""
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    return _group_rules(spec, base, autoscaling) + _autoscaler_rules(spec, base) + _auth_rules(spec, base)


def _rayjob_rules(spec: dict) -> list[str]:
    out = []
    shutdown, ttl = bool(spec.get("shutdownAfterJobFinishes")), spec.get("ttlSecondsAfterFinished", 0)
    if spec.get("suspend") and not shutdown:
        out.append("spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended")
    if ttl < 0:
        out.append("spec.ttlSecondsAfterFinished: must be a non-negative integer")
    if ttl > 0 and not shutdown:
        out.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true")
    has_spec, selector = "rayClusterSpec" in spec, spec.get("clusterSelector") or {}
    if has_spec == bool(selector):
        out.append("spec.rayClusterSpec: set exactly one of rayClusterSpec or clusterSelector")
    if selector and (spec.get("backoffLimit") or 0) > 0:
        out.append("spec.backoffLimit: incompatible with clusterSelector")
    if spec.get("submissionMode") == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        out.append("spec.backoffLimit: incompatible with InteractiveMode")
    if ((spec.get("rayClusterSpec") or {}).get("authOptions") or {}).get("enableK8sTokenAuth"):
        out.append("spec.rayClusterSpec.authOptions.enableK8sTokenAuth: not supported for RayJob")
    try:
        yaml.safe_load(spec.get("runtimeEnvYAML") or "")
    except yaml.YAMLError as e:
        out.append(f"spec.runtimeEnvYAML: not valid YAML ({e})")
    for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if key in spec and spec[key] <= 0:
            out.append(f"spec.{key}: must be a positive integer")
    if (spec.get("backoffLimit") or 0) < 0:
        out.append("spec.backoffLimit: must be non-negative")
    if has_spec:
        out += cluster_spec_rules(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return out


def kuberay_rules(obj: dict) -> list[str]:
    """Problems KubeRay's operator would reject a RayCluster or RayJob for."""
    out = _name_rules(obj)
    if obj["kind"] == "RayJob":
        return out + _rayjob_rules(obj.get("spec") or {})
    return out + cluster_spec_rules(obj.get("spec") or {}, "spec")

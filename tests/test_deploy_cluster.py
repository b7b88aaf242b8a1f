"""The Ray cluster launcher configs in cluster/: valid for Ray's own launcher schema, every
command parses, and every command names only what exists (repository files through the
file mounts, files the launcher itself writes, tools the image has); the job commands they
document parse with ganray's own CLI and name real space and runtime-env files."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = ["cluster/aws-gpu.yaml", "cluster/local.yaml"]
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
LAUNCHER_FILES = {"~/ray_bootstrap_config.yaml"}  # written to the head by `ray up`
TOOLS = {"pip", "ray", "test", "python3.11"}  # on the image (pip, ray) or any host (test, the venv's python)
TOKEN_FILE = "~/.ray/auth_token"  # made on your machine by `ray get-auth-token --generate`


def _config(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def _commands(config: dict) -> list[str]:
    return [c for key in COMMAND_KEYS for c in config.get(key) or []]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_the_config_is_valid_for_rays_launcher(launcher):
    config = _config(launcher)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written (no unknown keys, right types)
    validate_config(prepare_config(copy.deepcopy(config)))  # as `ray up` fills it in
    assert config["cluster_name"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_command_parses_as_shell(launcher):
    for cmd in _commands(_config(launcher)):
        proc = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{launcher}: {cmd!r}: {proc.stderr}"


def _mounts(config: dict) -> dict[str, Path]:
    """Remote path -> local path in this repository (the token file is the one exception)."""
    out = {}
    for remote, local in (config.get("file_mounts") or {}).items():
        if local == TOKEN_FILE and remote == TOKEN_FILE:
            continue
        assert not Path(local).is_absolute() and not local.startswith("~"), (
            f"{remote}: {local} is not in the repo"
        )
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} does not exist in the repository"
        out[remote.rstrip("/")] = (REPO / local).resolve()
    return out


def _check_word(word: str, mounts: dict[str, Path], created: set[str], where: str) -> None:
    path = word.split("=", 1)[1] if word.startswith("--") and "=" in word else word
    if not path.startswith("~/") or path in LAUNCHER_FILES:
        return
    if any(path == c or path.startswith(c + "/") for c in created):
        return
    root = next((r for r in mounts if path == r or path.startswith(r + "/")), None)
    assert root, f"{where}: {path} is neither mounted from the repository nor made by the launcher"
    assert (mounts[root] / path[len(root) :].lstrip("/")).exists(), (
        f"{where}: {path} is not in the repository"
    )


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_commands_name_only_what_exists(launcher):
    config = _config(launcher)
    mounts, created = _mounts(config), set()
    assert REPO.resolve() in mounts.values(), "the launcher must sync this checkout to the nodes"
    for cmd in _commands(config):
        words = shlex.split(cmd.replace(";", " ; "))
        env_free = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]
        tool = env_free[0]
        assert tool in TOOLS or tool.startswith("~/"), f"{launcher}: {cmd!r}: unknown tool {tool!r}"
        if "venv" in words:  # `python -m venv DIR` makes DIR for the commands after it
            created.add(words[words.index("venv") + 1])
        for w in words:
            _check_word(w, mounts, created, f"{launcher}: {cmd!r}")
        if "install" in words and "-e" in words:  # an editable install of this repository
            target = words[words.index("-e") + 1]
            assert mounts.get(target) == REPO.resolve() and (REPO / "pyproject.toml").exists(), cmd


def documented_job_commands(text: str) -> list[list[str]]:
    """The `ray job submit ... -- python -m ...` commands in comment or Markdown text, as argv lists."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith("ray job submit")
    ]


def check_job_command(argv: list[str]) -> None:
    """The runtime env and working dir exist; the entrypoint is a ganray CLI that accepts its flags
    and whose space file loads with its overrides."""
    from ganray.tune.__main__ import parse_args
    from ganray.tune.space import load_space

    submit, entry = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    if "--runtime-env" in submit:
        assert (REPO / submit[submit.index("--runtime-env") + 1]).is_file(), submit
    if "--working-dir" in submit:
        assert submit[submit.index("--working-dir") + 1] == ".", submit  # run from the repository root
    assert entry[:3] == ["python", "-m", "ganray.tune"], entry
    args = parse_args(entry[3:])
    load_space(str(REPO / args.space), args.overrides, args.num_samples)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_the_documented_job_command_parses_and_names_real_files(launcher):
    commands = documented_job_commands((REPO / launcher).read_text())
    assert commands, f"{launcher} documents no `ray job submit` command"
    for argv in commands:
        check_job_command(argv)


def test_a_command_naming_a_missing_file_fails_clearly():
    bad = _config("cluster/aws-gpu.yaml")
    bad["setup_commands"] = ["pip install -e ~/ganray/no-such-dir"]
    with pytest.raises(AssertionError, match="~/ganray/no-such-dir is not in the repository"):
        for cmd in _commands(bad):
            for w in shlex.split(cmd):
                _check_word(w, _mounts(bad), set(), cmd)
    from ganray.tune.space import SpaceError

    missing = "ray job submit -- python -m ganray.tune --space tune_spaces/nope.yaml --storage s3://b/p"
    with pytest.raises(SpaceError, match="nope.yaml: no such search-space file"):
        check_job_command(shlex.split(missing))


@pytest.mark.parametrize("doc", ["README.md", "k8s/README.md"])
def test_the_readmes_job_commands_parse_and_name_real_files(doc):
    commands = documented_job_commands((REPO / doc).read_text())
    assert commands, f"{doc} documents no `ray job submit` command"
    for argv in commands:
        entry = argv[argv.index("--") + 1 :]
        space = entry.index("--space") + 1
        entry[space] = entry[space].removeprefix("/home/ray/ganray/")  # the image's copy of this repo
        check_job_command(argv[: argv.index("--") + 1] + entry)

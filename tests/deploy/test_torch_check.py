"""The build's torch check (deploy/check_torch_cuda.py, run by the Dockerfile after every pip install
that could bring torch): it passes only for a torch built for the CUDA version TORCH_CUDA names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "check_torch_cuda.py"
sys.path.insert(0, str(SCRIPT.parent))
import check_torch_cuda  # noqa: E402


def run(tag: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), tag], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "tag, version",
    [("cu126", "12.6"), ("cu130", "13.0"), ("cu118", "11.8"), ("cu128", "12.8"), ("cpu", None)],
)
def test_tags_name_cuda_versions(tag: str, version: str | None):
    assert check_torch_cuda.expected_cuda(tag) == version


@pytest.mark.parametrize(
    "built_for, tag", [("13.0", "cu126"), ("12.6", "cu130"), (None, "cu130"), ("13.0", "cpu")]
)
def test_a_torch_for_another_cuda_is_refused(built_for: str | None, tag: str):
    problem = check_torch_cuda.check(tag, built_for)
    assert problem is not None and tag in problem and "TORCH_INDEX_URL" in problem


def test_the_check_against_the_installed_torch(capsys: pytest.CaptureFixture[str]):
    """This machine's torch is a CPU build: it passes for cpu and fails the build for any CUDA tag, run
    as the Dockerfile runs it (a process whose exit status fails the RUN step)."""
    assert torch.version.cuda is None, "the test expects the CPU build of torch"
    ok = run("cpu")
    assert ok.returncode == 0 and "as asked" in ok.stdout
    refused = run("cu130")
    assert refused.returncode == 1, refused
    assert "TORCH_CUDA=cu130" in refused.stderr and "CPU only" in refused.stderr
    # The same entry point in-process for the other cases (no torch import per case).
    assert check_torch_cuda.main(["cu126"]) == 1 and "TORCH_CUDA=cu126" in capsys.readouterr().err
    assert check_torch_cuda.main(["cuda13"]) == 1 and "cuXYZ" in capsys.readouterr().err
    assert check_torch_cuda.main([]) == 2


def test_the_dockerfile_checks_after_every_install_that_could_bring_torch():
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    default_index = r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/\$\{TORCH_CUDA\}$"
    assert re.search(default_index, dockerfile, re.M)
    installs = [line for line in dockerfile.splitlines() if line.startswith("RUN") and "pip install" in line]
    torch_installs = [line for line in installs if "--no-deps" not in line and "setuptools" not in line]
    assert len(torch_installs) == 2, torch_installs
    for line in torch_installs:
        assert line.rstrip().endswith('check_torch_cuda.py "${TORCH_CUDA}"'), line
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_installs[0]
    assert "!deploy/check_torch_cuda.py" in (REPO / ".dockerignore").read_text()

"""Fail unless the installed torch is built for the CUDA version a build asked for.

Run by the Dockerfile after installing torch: `python check_torch_cuda.py cu130` (or cu126, or cpu).
pip quietly falls back to the extra index when the PyTorch index does not answer, and PyPI's torch
wheels carry another CUDA version than the one asked for (torch 2.13.0 on PyPI: CUDA 13.0), which
needs another NVIDIA driver; this turns that into a failed build instead of a broken worker.
Standard library and torch only: it runs before the project is installed.
"""

from __future__ import annotations

import re
import sys


def expected_cuda(tag: str) -> str | None:
    """The `torch.version.cuda` a wheel tag names: cu126 -> "12.6", cu130 -> "13.0", cpu -> None."""
    if tag == "cpu":
        return None
    match = re.fullmatch(r"cu(\d+)(\d)", tag)
    if match is None:
        raise ValueError(f"TORCH_CUDA must be cuXYZ (cu126, cu130) or cpu, got {tag!r}")
    return f"{int(match[1])}.{match[2]}"


def check(tag: str, built_for: str | None) -> str | None:
    """Why a torch built for CUDA `built_for` (None: CPU only) does not match `tag`, or None."""
    wanted = expected_cuda(tag)
    if built_for == wanted:
        return None
    return (
        f"torch is built for {'CUDA ' + built_for if built_for else 'the CPU only'}, but TORCH_CUDA={tag} "
        f"asks for {'CUDA ' + wanted if wanted else 'the CPU build'}: the torch index (TORCH_INDEX_URL) "
        "did not answer or does not serve that build, and pip took another one"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_torch_cuda.py cu126|cu130|cpu", file=sys.stderr)
        return 2
    try:
        import torch

        problem = check(argv[0], torch.version.cuda)
    except ValueError as error:
        problem = str(error)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}: built for {argv[0]}, as asked")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

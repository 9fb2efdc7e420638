"""Which failures are the job's own (never retried) and which are worth another attempt."""

from __future__ import annotations

import pytest
import torch

from worker.jobs import is_out_of_resources


def test_a_real_cpu_allocation_failure_is_out_of_resources() -> None:
    with pytest.raises(RuntimeError) as raised:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_resources(raised.value)


def test_other_runtime_errors_are_retried() -> None:
    with pytest.raises(RuntimeError) as raised:
        torch.ones(2, 3) @ torch.ones(2, 3)
    assert not is_out_of_resources(raised.value)
    assert not is_out_of_resources(ConnectionError("storage down"))

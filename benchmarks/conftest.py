"""Benchmark settings: every benchmark reports the torch thread count it ran with."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _machine_info(benchmark):
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

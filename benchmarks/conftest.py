"""Benchmark settings: every result records the torch threads and GPU it ran with; the JSON's
machine_info records the versions that matter for speed (read back by benchmarks/report.py)."""

import importlib.metadata

import pytest
import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    versions = {}
    for dist in ("torch", "numpy", "onnxruntime", "openvino", "triton", "ctdn"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    machine_info["ctdn"] = {
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


@pytest.fixture(autouse=True)
def _machine_info(benchmark):
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

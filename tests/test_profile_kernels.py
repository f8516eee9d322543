"""benchmarks/profile_kernels.py's attribution of profiled work to the module that launched it.

On a GPU it names the layers behind the largest kernels outside the fused blocks; here the same
code attributes CPU ops, counted one per call, through the same profiler ranges.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ctdn import kernels
from ctdn.models import build

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are imported (see tests/test_kernels.py)

ROOT = Path(__file__).resolve().parents[1]
COUNTED = {"aten::conv2d", "aten::relu", "aten::add", "aten::mul"}


def _pk():
    spec = importlib.util.spec_from_file_location("pk", ROOT / "benchmarks" / "profile_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y * 2  # the add and the mul are the model's own ops


@pytest.mark.parametrize(
    ("opaque", "want"),
    [
        ((), {"a": 1, "b.0": 1, "b.1": 1, "(model)": 2}),
        ((nn.Sequential,), {"a": 1, "b": 2, "(model)": 2}),  # an opaque module takes its children's
    ],
)
def test_each_op_goes_to_the_innermost_module_that_ran_it(opaque, want):
    pk = _pk()
    net = Net().eval()
    with torch.inference_mode(), pk._layer_ranges(net, opaque):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(torch.randn(2, 3, 16, 16))
    got = pk.by_layer(prof.events(), lambda ev: 1.0 if ev.name in COUNTED else 0.0)
    assert got == want
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # hooks removed


def test_work_outside_every_module_is_named_so():
    pk = _pk()
    net = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode(), pk._layer_ranges(net):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x).relu()  # after the model's forward
    got = pk.by_layer(prof.events(), lambda ev: 1.0 if ev.name == "aten::relu" else 0.0)
    assert got == {"b.1": 1, "(outside the model)": 1}
    assert pk.kernel_cost(next(iter(prof.events()))) == 0.0  # no GPU kernels on the CPU


@pytest.mark.skipif(kernels.unavailable() is not None, reason=str(kernels.unavailable()))
def test_the_module_table_of_a_fused_model_counts_each_block_whole(capsys):
    """What ``--model`` prints for the rest of a fused model: modules outside the blocks by name."""
    pk = _pk()
    torch.manual_seed(0)
    model = build("tiny").eval()
    fused = kernels.fuse(model)
    x, dose = torch.rand(1, 1, 32, 32) * 2 - 1, torch.full((1,), 0.25)
    cost = lambda ev: 0.0 if ev.name.startswith(pk.LAYER) else max(ev.self_cpu_time_total, 0.0)  # noqa: E731
    got = pk.module_table(fused, (x, dose), reps=1, total=1.0, cost=cost)
    blocks = [n for n, m in fused.named_modules() if isinstance(m, kernels.nafblock.FusedNAFBlock)]
    n_blocks = len(blocks)
    assert n_blocks > 0 and got.pop("(fused blocks)") > 0
    assert "encoder.head" in got and "decoder.tail" in got  # convs outside the blocks, by name
    assert not set(got) & set(blocks)  # each block is in "(fused blocks)"
    assert not [n for n in got if any(n.startswith(b + ".") for b in blocks)]  # and nothing inside one
    out = capsys.readouterr().out
    assert f"{n_blocks} fused blocks" in out and "encoder.head (Conv2d)" in out
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in fused.modules())

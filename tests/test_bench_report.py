"""benchmarks/report.py renders pytest-benchmark JSON: ratios against the same run's torch eager fp32."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _report(name="report"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(name, mean, **info):
    return {
        "name": name,
        "group": "denoise-512",
        "param": name.split("[")[-1].rstrip("]"),
        "stats": {"mean": mean, "median": mean, "min": mean * 0.9, "rounds": 5},
        "extra_info": {"torch_threads": 2, "cuda": None, **info},
    }


def test_report_ratios_columns_machine_and_chart(tmp_path):
    rep = _report()
    common = {"preset": "edge", "device": "cpu", "batch": 1}
    data = {
        "machine_info": {
            "cpu": {"brand_raw": "Test CPU", "count": 2},
            "python_version": "3.11.7",
            "ctdn": {"versions": {"torch": "2.13.0"}, "torch_threads": 2, "cuda": []},
        },
        "datetime": "2026-12-01T00:00:00",
        "benchmarks": [
            _bench("test_denoise_slice[edge-fp32-torch-cpu-1]", 0.050, backend="torch", precision="fp32",
                   slices_per_s=20.0, **common),
            _bench("test_denoise_slice[edge-fp32-onnxruntime-cpu-1]", 0.100, backend="onnxruntime",
                   precision="fp32", slices_per_s=10.0, **common),
            # another batch: its own baseline is missing, so no ratio is invented
            _bench("test_denoise_slice[edge-fp32-onnxruntime-cpu-16]", 0.800, backend="onnxruntime",
                   precision="fp32", slices_per_s=20.0, **{**common, "batch": 16}),
        ],
    }  # fmt: skip
    src = tmp_path / "run.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "docs" / "performance.md"
    assert rep.main([str(src), "--out", str(out), "--figures", str(tmp_path / "docs" / "figures")]) == 0
    text = out.read_text()
    assert "CPU Test CPU (2 logical cores, torch threads 2); GPU none; Python 3.11.7; torch 2.13.0" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "denoise_slice[" in line}
    assert rows["denoise_slice[edge-fp32-torch-cpu-1]"].endswith("| 1.00x (baseline) |")
    assert rows["denoise_slice[edge-fp32-onnxruntime-cpu-1]"].endswith("| 0.50x |")
    assert rows["denoise_slice[edge-fp32-onnxruntime-cpu-16]"].endswith("|  |")
    assert "| `paper` | 34.5 |" in text  # GMACs counted by count_macs
    png = tmp_path / "docs" / "figures" / "performance-run.png"
    assert png.is_file() and "](figures/performance-run.png)" in text


def test_merge_keeps_every_benchmark_in_order_drops_raw_rounds_and_skips_a_cut_file(tmp_path, capsys):
    merge = _report("merge_results")
    runs = []
    for i, names in enumerate([["a", "b"], ["c"]]):
        bench = [dict(_bench(f"test_x[{n}]", 0.1), stats={"mean": 0.1, "data": [0.1] * 50}) for n in names]
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps({"machine_info": {"node": f"m{i}"}, "benchmarks": bench}))
    cut = tmp_path / "cut.json"
    cut.write_text('{"benchmarks": [')  # a run stopped while writing it
    out = tmp_path / "merged.json"
    assert merge.main([str(out), str(runs[0]), str(cut), str(runs[1])]) == 0
    merged = json.loads(out.read_text())
    assert [b["name"] for b in merged["benchmarks"]] == ["test_x[a]", "test_x[b]", "test_x[c]"]
    assert all(b["stats"] == {"mean": 0.1} for b in merged["benchmarks"])
    assert merged["machine_info"] == {"node": "m1"}  # the last file's
    assert "skipped" in capsys.readouterr().err
    before = runs[0].read_text()
    with pytest.raises(SystemExit, match="also an input"):
        merge.main([str(runs[0]), str(runs[0])])
    assert runs[0].read_text() == before  # the input is never overwritten

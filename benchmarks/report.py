"""Render pytest-benchmark JSON results into the performance report (Markdown tables and a bar chart).

    python benchmarks/report.py                       # benchmarks/results/*.json -> docs/performance.md
    python benchmarks/report.py RUN.json ... --out report.md --figures docs/figures

Each JSON file is one run on one machine (``--benchmark-json``); the report has a section per file
with the machine (CPU, GPU, versions), then a table per benchmark group. The headline column is the
speed-up against the torch eager fp32 baseline measured *in the same run* (same preset, batch,
device, size), since absolute times vary between machines. Physical context comes first: GMACs per
slice of each preset counted by ``ctdn.models.count_macs`` and the bytes one NAFBlock must move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANT_FIELDS = ("backend", "precision", "variant")  # what a row is compared across
CASE_FIELDS = ("preset", "device", "batch", "channels", "size")  # what must match its baseline
COLUMNS = [  # extra_info key, header, format
    ("batch", "batch", "{:d}"),
    ("slices_per_s", "slices/s", "{:.1f}"),
    ("ms_per_slice", "ms/slice", "{:.2f}"),
    ("gmacs_per_slice", "GMACs/slice", "{:.1f}"),
    ("peak_rss_growth_mb", "peak RSS +MB", "{:.0f}"),
    ("cuda_max_allocated_mb", "CUDA max MB", "{:.0f}"),
    ("us_per_call", "us/call", "{:.1f}"),
    ("achieved_gbs", "GB/s", "{:.0f}"),
    ("slices", "slices", "{:d}"),
    ("output_mib", "output MiB", "{:.0f}"),
    ("peak_rss_anon_mib", "peak RssAnon MiB", "{:.0f}"),
    ("extra_over_output_mib", "extra - output MiB", "{:+.0f}"),
]


def _is_baseline(info: dict) -> bool:
    return (
        info.get("backend", "torch") == "torch"
        and info.get("precision", "fp32") == "fp32"
        and info.get("variant", "eager") == "eager"
    )


def _key(info: dict) -> tuple:
    """What must match for two rows to be compared (measured values and variant fields never do)."""
    return tuple(str(info.get(k)) for k in CASE_FIELDS)


def _label(bench: dict) -> str:
    """The test's name without ``test_`` (its parameters alone can repeat across tests of a group)."""
    return re.sub(r"^test_", "", bench["name"])


def _fmt(v, spec: str) -> str:
    try:
        return spec.format(v)
    except (ValueError, TypeError):
        return str(v)


def group_table(benches: list[dict]) -> str:
    """One Markdown table for one group's results."""
    infos = [b.get("extra_info", {}) for b in benches]
    base = {_key(i): b["stats"]["mean"] for b, i in zip(benches, infos, strict=True) if _is_baseline(i)}
    has_variants = any(any(f in i for f in VARIANT_FIELDS) for i in infos)
    cols = [c for c in COLUMNS if any(c[0] in i for i in infos)]
    head = ["case", "mean ms", "median ms", "min ms", "rounds"]
    head += [h for _, h, _ in cols] + (["vs torch eager"] if has_variants else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, info in sorted(zip(benches, infos, strict=True), key=lambda t: _label(t[0])):
        s = b["stats"]
        row = [_label(b), f"{1e3 * s['mean']:.2f}", f"{1e3 * s['median']:.2f}", f"{1e3 * s['min']:.2f}"]
        row.append(str(s["rounds"]))
        row += [_fmt(info[k], spec) if k in info else "" for k, _, spec in cols]
        if has_variants:
            ref = base.get(_key(info))
            if ref is None:
                row.append("")
            else:
                row.append("1.00x (baseline)" if _is_baseline(info) else f"{ref / s['mean']:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_line(data: dict) -> str:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    extra = m.get("ctdn", {})
    versions = ", ".join(f"{k} {v}" for k, v in (extra.get("versions") or {}).items())
    gpus = ", ".join(extra.get("cuda") or []) or "none"
    threads = extra.get("torch_threads")
    cores = f"{cpu.get('count', '?')} logical cores" + (f", torch threads {threads}" if threads else "")
    return (
        f"CPU {cpu.get('brand_raw', '?')} ({cores}); GPU {gpus}; Python {m.get('python_version', '?')}"
        f"{f'; {versions}' if versions else ''}; run {data.get('datetime', '?')[:16]}"
    )


def physical_context() -> str:
    """GMACs per slice per preset (counted) and bytes a NAFBlock moves at each level for a 512x512 slice."""
    import torch

    from ctdn import kernels
    from ctdn.models import build, count_macs

    lines = [
        "| preset | GMACs per 512x512 slice (counted) | parameters | NAFBlocks |",
        "|---|---|---|---|",
    ]
    blocks = [
        "| preset | level | channels | size | NAFBlocks | min bytes/block (fp16) | Triton path "
        "| its bytes/block (fp16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset in ("edge", "paper"):
        m = build(preset).eval()
        macs = count_macs(m, torch.zeros(1, 1, 512, 512), torch.tensor([0.25])) / 1e9
        n_blocks = sum(type(x).__name__ == "NAFBlock" for x in m.modules())
        params = sum(p.numel() for p in m.parameters()) / 1e6
        lines.append(f"| `{preset}` | {macs:.1f} | {params:.2f} M | {n_blocks} |")
        for lv, c, size, count in m.config.block_levels(512):
            n = c * size * size * 2
            path = kernels.path_for(c, torch.float16)
            blocks.append(
                f"| `{preset}` | {lv} | {c} | {size}x{size} | {count} | {2 * n / 1e6:.1f} MB | {path} "
                f"| {kernels.TRAFFIC[path] * n / 1e6:.1f} MB |"
            )
    note = (
        "Min bytes: read the input and write the output once (2 C values per pixel). The Triton kernels "
        f"move {kernels.TRAFFIC['fused']} C values per pixel on the three-pass fused path, "
        f"{kernels.TRAFFIC['split-ln']} on the seven-kernel split-ln path of wide blocks and "
        f"{kernels.TRAFFIC['split']} on the five-kernel split path (docs/kernels.md); eager torch about 45."
    )
    return "\n".join(lines) + "\n\n" + "\n".join(blocks) + "\n\n" + note


def bar_chart(benches: list[dict], path: Path, title: str) -> Path | None:
    """Horizontal bars of slices/s (Pillow only), one per denoise-512 case."""
    from PIL import Image, ImageDraw

    rows = [(b, b["extra_info"]) for b in benches if "slices_per_s" in b.get("extra_info", {})]
    if not rows:
        return None
    rows.sort(key=lambda t: (t[1].get("preset", ""), t[1].get("batch", 0), -t[1]["slices_per_s"]))
    label_w, bar_w, row_h = 330, 420, 18
    img = Image.new("RGB", (label_w + bar_w + 80, 30 + row_h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 6), title, fill="black")
    top = max(r[1]["slices_per_s"] for r in rows)
    for i, (_, info) in enumerate(rows):
        y = 26 + i * row_h
        fields = ("preset", "batch", "backend", "precision", "device")
        name = " ".join(str(info.get(k, "")) for k in fields)
        d.text((6, y + 3), name, fill="black")
        w = max(1, int(bar_w * info["slices_per_s"] / top))
        colour = (60, 110, 180) if not _is_baseline(info) else (200, 120, 40)
        d.rectangle([label_w, y + 2, label_w + w, y + row_h - 3], fill=colour)
        d.text((label_w + w + 4, y + 3), f"{info['slices_per_s']:.1f}/s", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render(files: list[Path], figures: Path, out: Path) -> str:
    parts = [
        "# Performance",
        "",
        "Generated by `python benchmarks/report.py` from the pytest-benchmark JSON files in "
        "`benchmarks/results/` (how they were made: benchmarks/README.md). Speed-ups are against torch "
        "eager fp32 in the same run; absolute times are of the machine named above each section. "
        "Backends or precisions a machine cannot run are skipped by the benchmarks with the reason and "
        "do not appear here.",
        "",
        "## Physical context",
        "",
        physical_context(),
    ]
    for f in files:
        data = json.loads(f.read_text())
        parts += ["", f"## `{f.name}`", "", machine_line(data)]
        groups: dict[str, list[dict]] = {}
        for b in data.get("benchmarks", []):
            groups.setdefault(b.get("group") or "other", []).append(b)
        for g in sorted(groups):
            parts += ["", f"### {g}", "", group_table(groups[g])]
            if g == "denoise-512":
                png = figures / f"performance-{_slug(f.stem)}.png"
                png = bar_chart(groups[g], png, f"{f.stem}: slices/s")
                if png is not None:
                    rel = Path(os.path.relpath(png, out.parent)).as_posix()
                    parts += ["", f"![slices/s, {f.stem}]({rel})"]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "files", nargs="*", type=Path, help="pytest-benchmark JSON files (default: benchmarks/results/*.json)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    a = ap.parse_args(argv)
    files = a.files or sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    if not files:
        print("no benchmark results found", file=sys.stderr)
        return 1
    text = render(files, a.figures, a.out)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(f"wrote {a.out} from {len(files)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

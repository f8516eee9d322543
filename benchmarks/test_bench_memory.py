"""Peak memory of denoising a 1000-slice 512x512 volume (issue 8): .npy memmap and DICOM folder.

Each case runs in a fresh subprocess (``ctdn denoise`` or a two-line script calling ``ctdn.denoise``)
with the shipped ``edge`` model on the CPU (torch backend); the parent samples the child's
``/proc/<pid>/status`` every 10 ms and keeps the peak of ``RssAnon``: anonymous resident memory,
i.e. the heap of Python, numpy and torch. File-backed pages (the memory-mapped input, a
memory-mapped output, the page cache of the DICOM files) are not in it: the kernel can drop or
write them back at any time. The child's ``VmHWM`` (the kernel's peak of all resident memory,
file pages included) is recorded beside it as ``vm_hwm_mib``; ``ru_maxrss`` is not used, because
Linux carries it over from the parent across fork and exec. Sampling can miss a spike shorter than
10 ms; the whole-volume arrays that matter here live for seconds.

The constant (Python, torch, the model, one batch) is measured by running the same case on the
first 2 slices of the same data; ``extra_over_output_mib`` = peak - that baseline - the size of the
result as float32 (1000 MiB). Data are generated once into ``$CTDN_BENCH_CACHE`` (default
``~/.cache/ctdn-bench``); ``CTDN_MEMORY_SLICES`` sets the number of slices (default 1000).

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_memory.py --benchmark-json out.json
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctdn import phantoms

N = int(os.environ.get("CTDN_MEMORY_SLICES", "1000"))
SIZE = 512
CACHE = Path(os.environ.get("CTDN_BENCH_CACHE", Path.home() / ".cache" / "ctdn-bench")) / f"memory-{N}"
MIB = 1 << 20
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

API_SCRIPT = (
    "import sys, numpy as np, ctdn\n"
    "x = np.load(sys.argv[1], mmap_mode='r')\n"
    "y = ctdn.denoise(x, 0.1, device='cpu', backend='torch')\n"
    "assert y.shape == x.shape\n"
)


def _slices(n: int):
    """n noisy 512x512 abdomen slices in HU (one phantom, fresh noise per slice), one at a time."""
    base = phantoms.generate("abdomen", seed=0, size=SIZE).hu.astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield base + rng.normal(0, 25, base.shape).astype(np.float32)


def _write_npy(path: Path, n: int) -> None:
    tmp = path.with_suffix(".part.npy")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, SIZE, SIZE))
    for k, s in enumerate(_slices(n)):
        mm[k] = s
    mm.flush()
    del mm
    os.replace(tmp, path)


def _write_dicom(folder: Path, n: int) -> None:
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for k, s in enumerate(_slices(n)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = tmp / f"CT{k:05d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID = "Bench^Memory", "CTDN-MEM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, k + 1, "memory benchmark"
        ds.ImagePositionPatient = [-250.0, -250.0, 1.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.9765625, 0.9765625], 1.0
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        stored = np.clip(np.rint(s + 1024), -32768, 32767).astype("<i2")
        ds.add_new(0x7FE00010, "OW", stored.tobytes())
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    os.replace(tmp, folder)


@pytest.fixture(scope="module")
def data() -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = {"npy": CACHE / "volume.npy", "dicom": CACHE / "series", "npy2": CACHE / "volume2.npy",
             "dicom2": CACHE / "series2"}
    if not paths["npy"].exists():
        _write_npy(paths["npy"], N)
    if not paths["dicom"].exists():
        _write_dicom(paths["dicom"], N)
    if not paths["npy2"].exists():
        _write_npy(paths["npy2"], 2)
    if not paths["dicom2"].exists():
        tmp = CACHE / "series2.part"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in ("CT00000.dcm", "CT00001.dcm"):
            shutil.copy(paths["dicom"] / name, tmp / name)
        os.replace(tmp, paths["dicom2"])
    return paths


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _measure(argv: list[str]) -> dict:
    """Run argv; peak RssAnon (sampled every 10 ms) and the last VmHWM seen, in MiB; wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_anon = hwm = 0
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        anon = _status_kib(proc.pid, "RssAnon")
        if anon is not None:
            peak_anon = max(peak_anon, anon)
        hwm = max(hwm, _status_kib(proc.pid, "VmHWM") or 0)
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode(errors="replace")
    assert proc.returncode == 0, output
    return {
        "peak_rss_anon_mib": peak_anon / 1024,
        "vm_hwm_mib": hwm / 1024,
        "seconds": time.perf_counter() - t0,
        "log": output.strip().splitlines()[-1:],
    }


def _cli(src: Path, dst: Path) -> list[str]:
    return [sys.executable, "-m", "ctdn", "denoise", str(src), str(dst), "--dose", "0.1", "--model", "edge",
            "--device", "cpu", "--backend", "torch", "--quiet"]


CASES = {
    # case: (input kind, how it is run, output kind)
    "api-memmap-to-array": ("npy", "api", None),
    "cli-npy-to-npy": ("npy", "cli", ".npy"),
    "cli-dicom-to-npy": ("dicom", "cli", ".npy"),
    "cli-dicom-to-dicom": ("dicom", "cli", ""),
}


@pytest.mark.benchmark(group="memory-1000x512x512")
@pytest.mark.parametrize("case", list(CASES))
def test_peak_memory(benchmark, data, tmp_path, case):
    kind, how, suffix = CASES[case]

    def argv(small: bool, tag: str) -> list[str]:
        src = data[kind + ("2" if small else "")]
        if how == "api":
            return [sys.executable, "-c", API_SCRIPT, str(src)]
        return _cli(src, tmp_path / f"out-{tag}{suffix}")

    base = _measure(argv(True, "baseline"))
    result = {}

    def run():
        result.update(_measure(argv(False, "full")))

    benchmark.pedantic(run, rounds=1, iterations=1)
    n = N
    out_mib = n * SIZE * SIZE * 4 / MIB
    if suffix == ".npy":
        out = np.load(tmp_path / "out-full.npy", mmap_mode="r")
        assert out.shape == (n, SIZE, SIZE)
    elif suffix == "":
        assert len(list((tmp_path / "out-full").iterdir())) == n
    extra = result["peak_rss_anon_mib"] - base["peak_rss_anon_mib"]
    benchmark.extra_info.update(
        case=case,
        slices=n,
        shape=[n, SIZE, SIZE],
        output_mib=out_mib,
        peak_rss_anon_mib=round(result["peak_rss_anon_mib"], 1),
        baseline_2_slices_rss_anon_mib=round(base["peak_rss_anon_mib"], 1),
        extra_rss_anon_mib=round(extra, 1),
        extra_over_output_mib=round(extra - out_mib, 1),
        vm_hwm_mib=round(result["vm_hwm_mib"], 1),
        baseline_vm_hwm_mib=round(base["vm_hwm_mib"], 1),
        seconds=round(result["seconds"], 1),
        log=result["log"],
        output_in_memory=how == "api",
    )

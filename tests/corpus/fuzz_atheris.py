"""Coverage-guided fuzzing of ``read_dicom`` with atheris (libFuzzer), outside the test suite.

    pip install atheris
    python tests/corpus/fuzz_atheris.py [-max_total_time=300] [-rss_limit_mb=2048]

Seeds are the readable files of the corpus (``tests/corpus/dicom``), copied to a scratch folder
that libFuzzer then grows. Every input is written to one scratch file and read with
``read_dicom(..., allow_non_ct=True)``; any exception that is not a ``CTDNError``, or a volume
that is not finite float32 (N, H, W), is a crash: libFuzzer stops and saves the input as
``crash-<sha1>`` in the current folder. Add such an input to ``make_corpus.py`` as a case.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np
    import pydicom  # noqa: F401 - instrumented for coverage

    from ctdn.errors import CTDNError
    from ctdn.io import read_dicom

HERE = Path(__file__).resolve().parent
SCRATCH = Path(tempfile.mkdtemp(prefix="ctdn-atheris-"))
TARGET = SCRATCH / "input.dcm"


def one_input(data: bytes) -> None:
    TARGET.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = read_dicom(TARGET, allow_non_ct=True)
    except CTDNError:
        return
    hu = vol.hu
    if hu.dtype != np.float32 or hu.ndim != 3 or not np.isfinite(hu).all():
        raise AssertionError(f"bad volume: {hu.dtype} {hu.shape}")


def main() -> None:
    seeds = SCRATCH / "seeds"
    seeds.mkdir()
    manifest = json.loads((HERE / "manifest.json").read_text())
    for case in manifest["cases"]:
        if "ok" in case["expect"] and "path" in case:
            src = HERE / case["path"]
            for f in [src] if src.is_file() else sorted(src.glob("*.dcm"))[:1]:
                shutil.copy(f, seeds / f"{case['case']}-{f.name}")
    args = [sys.argv[0], str(seeds), *sys.argv[1:]]
    if not any(a.startswith("-max_total_time") for a in args):
        args.append("-max_total_time=300")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""ctdn.deploy.validate: a deployed runner against the reference on a phantom at each dose."""

import numpy as np
import pytest
import torch

from ctdn.backends.pytorch import Runner as TorchRunner
from ctdn.deploy.validate import DOSES, OrtRunner, make_cases, summary, validate
from ctdn.errors import EngineError, InputError
from ctdn.models import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def edge():
    return load_model("edge")


@pytest.fixture(scope="module")
def cases():
    # 64x64 and 180 views: ~0.2 s to simulate (the real check uses 512x512 at the clinical 1152 views).
    return make_cases(64, views=180)


@pytest.fixture(scope="module")
def torch_ref(edge):
    return TorchRunner(edge, CPU)


def check(runner, reference, cases, **kw):
    return validate(runner, reference, hu_window=(-1000.0, 1000.0), multiple=16, cases=cases, **kw)


def test_cases(cases):
    assert cases.shape == (64, 64) and sorted(cases.low) == list(DOSES)
    noise = [float(np.std(cases.low[d] - cases.clean)) for d in DOSES]
    assert noise == sorted(noise, reverse=True)  # less dose, more noise
    rect = make_cases((32, 48), doses=(0.5,), views=96)
    assert rect.shape == (32, 48) and rect.low[0.5].shape == (32, 48)


def test_onnxruntime_matches_torch(edge, cases, torch_ref):
    ort = pytest.importorskip("onnxruntime")  # noqa: F841
    from ctdn.backends.onnxruntime import Runner as OrtBackend

    report = check(OrtBackend(edge, CPU), torch_ref, cases, precision="fp32")
    assert report.ok and [r.dose for r in report.rows] == list(DOSES)
    for r in report.rows:
        assert r.agreement_db > 80 and r.max_abs_hu < 0.5
        assert abs(r.gain_db - r.ref_gain_db) < 0.01
    assert "worst agreement" in summary(report) and "ok" in summary(report)


def test_fp16_onnx_graph_passes_the_fp16_check(edge, cases, torch_ref, tmp_path):
    pytest.importorskip("onnxruntime")
    from ctdn.deploy.onnx_precision import convert_file
    from ctdn.export import to_onnx

    fp32 = to_onnx(edge, tmp_path / "edge.onnx", check=False)
    fp16 = convert_file(fp32, tmp_path / "edge.fp16.onnx")
    report = check(OrtRunner(fp16), OrtRunner(fp32), cases, precision="fp16", batch=3)
    assert report.ok and min(r.agreement_db for r in report.rows) > 45


def test_nan_is_refused(cases, torch_ref):
    def broken(x, dose):
        y = torch_ref(x, dose)
        y[dose < 0.2, 0, :4, :4] = np.nan  # as an fp16 LayerNorm overflow does, at the lowest dose
        return y

    with pytest.raises(EngineError, match=r"NaN/inf values \(doses \[0.1\]\).*LayerNorm must run in fp32"):
        check(broken, torch_ref, cases)


def test_a_large_error_is_refused(cases, torch_ref):
    rng = np.random.default_rng(0)

    def noisy(x, dose):
        return (torch_ref(x, dose) + rng.normal(0, 0.03, x.shape)).astype(np.float32)

    with pytest.raises(EngineError, match=r"agreement \d+\.\d dB with the reference is below 45 dB for fp16"):
        check(noisy, torch_ref, cases, precision="fp16")
    report = check(noisy, torch_ref, cases, precision="fp16", raise_on_failure=False)
    assert not report.ok and all(r.agreement_db < 45 for r in report.rows)
    assert "dose   agreement" in report.table()


def test_a_lost_denoising_gain_is_refused(cases):
    # The shipped model is trained at 0.7 mm pixels and does not denoise this coarse 64x64 slice, so
    # an oracle that returns the clean slice stands in for a reference that denoises well.
    from ctdn.hu import hu_to_unit

    clean = hu_to_unit(cases.clean, -1000.0, 1000.0).astype(np.float32)

    def oracle(x, dose):
        return np.broadcast_to(clean, x.shape).copy()

    def identity(x, dose):  # does not denoise at all
        return x.copy()

    with pytest.raises(EngineError, match=r"denoising gain \+0.00 dB is \d+\.\d\d dB below the reference's"):
        check(identity, oracle, cases, min_agreement_db=0.0)
    report = check(oracle, oracle, cases)
    assert report.ok and all(r.gain_db > 3 for r in report.rows)


def test_bad_runner_output_and_arguments(cases, torch_ref):
    with pytest.raises(EngineError, match="returned shape"):
        check(lambda x, d: x[:, :, :32], torch_ref, cases)
    with pytest.raises(InputError, match="must be a multiple of 128"):
        validate(torch_ref, torch_ref, multiple=128, cases=cases)
    with pytest.raises(InputError, match="precision must be one of"):
        check(torch_ref, torch_ref, cases, precision="int8")


def test_batches_respect_the_runner_limit(cases, torch_ref):
    seen = []

    def runner(x, dose):
        seen.append(len(x))
        return torch_ref(x, dose)

    check(runner, torch_ref, cases, batch=3)
    assert seen == [3, 1]

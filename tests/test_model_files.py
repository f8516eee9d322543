"""Model files are checked at load: a corrupt, foreign or hand-edited checkpoint is one ctdn error.

Bad checkpoints are made from a tiny model written by ctdn's own ``save_model``, with its tensors or
its ``ctdn`` metadata edited through safetensors, so each test changes one thing about a real file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch as st
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from safetensors import safe_open

from ctdn import Denoiser
from ctdn.cli import main
from ctdn.errors import CTDNError, InputError, InputTypeError, ModelError
from ctdn.models import build, load_model, preset, save_model
from ctdn.models.checkpoint import read_any_meta

_KEY = "encoder.head.weight"  # a real tensor of the tiny model, checked in the fixture


@pytest.fixture
def good(tmp_path) -> Path:
    torch.manual_seed(0)
    path = save_model(build("tiny"), tmp_path / "good.safetensors", {"name": "tiny"})
    with safe_open(str(path), framework="pt") as f:
        assert _KEY in f.keys()
    return path


def _parts(path: Path) -> tuple[dict, str]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()["ctdn"]


def _rewrite(good: Path, name: str, *, tensors=None, meta=None, raw=None) -> Path:
    """A copy of ``good`` as ``name`` with tensors replaced, or metadata edited (a function of the
    dict) or replaced by the raw string ``raw``."""
    t, text = _parts(good)
    t = {**t, **(tensors or {})}
    if meta is not None:
        text = json.dumps(meta(json.loads(text)))
    if raw is not None:
        text = raw
    out = good.parent / name
    st.save_file(t, str(out), metadata={"ctdn": text})
    return out


def _refused(source, *match: str) -> str:
    """The one-line ModelError ``load_model(source)`` raises, checked to contain each of ``match``."""
    with pytest.raises(ModelError) as info:
        load_model(source)
    assert isinstance(info.value, InputError)  # a ValueError, as checkpoint refusals always were
    msg = str(info.value)
    assert "\n" not in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


def test_the_fixture_loads(good):
    m = load_model(good)
    assert m.config == preset("tiny") and m.meta["name"] == "tiny"


# --- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, count",
    [(math.nan, "1 NaN and 0 infinite"), (math.inf, "0 NaN and 1 infinite"), (-math.inf, "0 NaN and 1 inf")],
)
def test_a_non_finite_weight_is_refused_naming_the_tensor(good, value, count):
    t, _ = _parts(good)
    bad = t[_KEY].clone()
    bad.view(-1)[3] = value
    path = _rewrite(good, "bad.safetensors", tensors={_KEY: bad})
    with pytest.raises(ModelError) as info:
        load_model(path)
    msg = str(info.value)
    assert str(path) in msg and repr(_KEY) in msg and count in msg, msg


def test_every_weight_is_checked_not_only_the_first(good):
    t, _ = _parts(good)
    last = sorted(t)[-1]
    bad = torch.full_like(t[last], math.nan)
    _refused(_rewrite(good, "bad.safetensors", tensors={last: bad}), repr(last), f"{bad.numel()} NaN")


def test_a_float64_weight_past_float32_is_refused(good):
    # Finite as stored, infinite once loaded into the float32 model.
    t, _ = _parts(good)
    big = t[_KEY].double()
    big.view(-1)[0] = 1e300
    _refused(_rewrite(good, "bad.safetensors", tensors={_KEY: big}), repr(_KEY), "1 infinite")


def test_finite_float64_and_float16_weights_load(good):
    t, _ = _parts(good)
    for dtype in (torch.float64, torch.float16):
        path = _rewrite(good, f"{dtype}.safetensors", tensors={k: v.to(dtype) for k, v in t.items()})
        m = load_model(path)
        torch.testing.assert_close(m.state_dict()[_KEY], t[_KEY].to(dtype).float())


def test_an_integer_weight_is_refused(good):
    t, _ = _parts(good)
    ints = torch.zeros_like(t[_KEY], dtype=torch.int32)
    _refused(_rewrite(good, "bad.safetensors", tensors={_KEY: ints}), repr(_KEY), "int32")


# --- metadata: hu_window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window, why",
    [
        ([-1e308, 1e308], "outside the CT range"),
        ([-1e6, 1000.0], "outside the CT range"),
        ([-1000.0, 70000.0], "outside the CT range"),
        ([10**400, 10**401], "outside the CT range"),  # ints no float can hold
        ([math.nan, 1000.0], "outside the CT range"),
        ([-1000.0, math.inf], "outside the CT range"),
        ([1000.0, -1000.0], "low < high"),  # reversed
        ([40.0, 40.0], "low < high"),
        ([40.0, 40.5], "at least 1 HU"),
        (["-1000", "1000"], "two numbers"),
        ([True, 2], "two numbers"),
        ([-1000.0], "two numbers"),
        ([-1000.0, 0.0, 1000.0], "two numbers"),
        ([[-1000.0], [1000.0]], "two numbers"),
    ],
)
def test_a_bad_hu_window_is_refused(good, window, why):
    def edit(m):
        m["hu_window"] = window
        m["config"]["hu_window"] = window  # consistent, so the window itself must be what is refused
        return m

    path = _rewrite(good, "bad.safetensors", meta=edit)
    _refused(path, str(path), "hu_window", why)


@pytest.mark.parametrize("window", [{"lo": -1000}, "wide", None, 1000])
def test_a_hu_window_of_another_json_type_is_refused(good, window):
    path = _rewrite(good, "bad.safetensors", meta=lambda m: {**m, "hu_window": window})
    _refused(path, str(path), "'hu_window'")


def test_a_hu_window_only_in_the_config_is_also_checked(good):
    # The top-level window sane, the config's not: ModelConfig refuses it too.
    def edit(m):
        m["config"]["hu_window"] = [-1e308, 1e308]
        return m

    _refused(_rewrite(good, "bad.safetensors", meta=edit), "bad model config", "hu_window")


def test_a_sane_window_other_than_the_default_loads(good):
    def edit(m):
        m["hu_window"] = m["config"]["hu_window"] = [-1024, 3071]
        return m

    assert load_model(_rewrite(good, "ok.safetensors", meta=edit)).config.hu_window == (-1024, 3071)


# --- metadata: known fields -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["format", "kind", "config", "hu_window", "ctdn_version"])
def test_a_missing_field_is_refused_naming_it(good, field):
    path = _rewrite(good, "bad.safetensors", meta=lambda m: {k: v for k, v in m.items() if k != field})
    _refused(path, str(path), "format" if field == "format" else repr(field))


@pytest.mark.parametrize(
    "field, value",
    [
        ("kind", 1),
        ("config", []),
        ("config", "tiny"),
        ("ctdn_version", 0.1),
        ("name", ["tiny"]),
        ("doses_seen", "0.1"),
        ("doses_seen", [0.1, "high"]),
        ("stages", {"teacher": 1}),
    ],
)
def test_a_wrongly_typed_field_is_refused_naming_it(good, field, value):
    path = _rewrite(good, "bad.safetensors", meta=lambda m: {**m, field: value})
    _refused(path, str(path), repr(field))


@pytest.mark.parametrize(
    "field, value",
    [
        ("residual", "false"),  # a truthy string would silently flip the model's output path
        ("dose", 1),
        ("latent", 16.0),
        ("mid_blocks", "1"),
        ("dose_dim", 0),
        ("shuffle", 2.0),
        ("widths", [8, True]),
        ("widths", 8),
        ("skips", [0.0]),
        ("arch", ["nafnet"]),
    ],
)
def test_a_wrongly_typed_config_field_is_refused_naming_it(good, field, value):
    def edit(m):
        m["config"][field] = value
        return m

    path = _rewrite(good, "bad.safetensors", meta=edit)
    _refused(path, str(path), "bad model config", field)


def test_unknown_fields_are_kept_at_the_top_and_refused_in_the_config(good):
    note = {"site": "A", "reviewed": [1, 2]}
    m = load_model(_rewrite(good, "extra.safetensors", meta=lambda m: {**m, "note": note}))
    assert m.meta["note"] == note  # provenance: save_model takes any caller metadata

    def edit(m):
        m["config"]["attention"] = True
        return m

    _refused(_rewrite(good, "bad.safetensors", meta=edit), "unknown model config keys")


def test_another_format_is_named(good):
    path = _rewrite(good, "bad.safetensors", meta=lambda m: {**m, "format": "ctdn-model/9"})
    _refused(path, "'ctdn-model/9'", "ctdn-model/1")


_JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=8),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FIELDS = ["format", "kind", "config", "hu_window", "ctdn_version", "name", "doses_seen", "stages"]


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    where=hs.sampled_from(["top", "config"]),
    field=hs.sampled_from(_FIELDS + ["arch", "widths", "residual", "latent", "skips", "shuffle"]),
    value=_JSON,
)
def test_any_json_in_a_field_loads_or_is_one_ctdn_error(good, where, field, value):
    # The family of hand-edited metadata: whatever JSON sits in a known field, the load either gives
    # a usable model (finite weights, a sane window) or a one-line ctdn error; never another exception.
    def edit(m):
        (m if where == "top" else m["config"])[field] = value
        return m

    path = _rewrite(good, "fuzz.safetensors", meta=edit)
    try:
        m = load_model(path)
    except CTDNError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return
    lo, hi = m.config.hu_window
    assert -32768 <= lo < hi <= 65535
    assert all(bool(torch.isfinite(t).all()) for t in m.state_dict().values())


# --- metadata that is not a JSON object, files that are not checkpoints --------------------------


@pytest.mark.parametrize(
    "raw, what",
    [
        ("[1, 2, 3]", "a JSON array"),
        ("[]", "a JSON array"),
        ("42", "a JSON number"),
        ('"ctdn-model/1"', "a JSON string"),
        ("null", "a JSON null"),
        ("true", "a JSON boolean"),
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        pytest.param("[" * 100_000 + "]" * 100_000, "not valid JSON", id="deeper-than-json-parses"),
    ],
)
def test_metadata_that_is_not_an_object_is_refused(good, raw, what):
    path = _rewrite(good, "bad.safetensors", raw=raw)
    _refused(path, str(path), what)
    with pytest.raises(ModelError):
        read_any_meta(path)  # the teacher reader too


def test_a_safetensors_file_without_ctdn_metadata(good):
    t, _ = _parts(good)
    path = good.parent / "foreign.safetensors"
    st.save_file(t, str(path), metadata={"other": "x"})
    _refused(path, str(path), "no ctdn metadata")


@pytest.mark.parametrize(
    "content, what",
    [
        (b"", "empty (0 bytes)"),
        (b"not a model at all\n" * 20, "not a readable safetensors file"),
        ((10**9).to_bytes(8, "little") + b"{}", "not a readable safetensors file"),  # header past the end
        (b"\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3]", "not a readable safetensors file"),
    ],
)
def test_a_file_that_is_not_safetensors(tmp_path, content, what):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    _refused(path, str(path), what)


def test_truncated_weights_are_refused(good):
    data = good.read_bytes()
    path = good.parent / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    _refused(path, str(path))


def test_a_folder_and_a_missing_path(tmp_path, monkeypatch):
    folder = tmp_path / "models.safetensors"
    folder.mkdir()
    _refused(folder, str(folder), "is a folder")
    _refused(tmp_path, str(tmp_path), "is a folder")
    _refused(tmp_path / "nope.safetensors", "model file not found")
    _refused(tmp_path / "nope" / "m.safetensors", "model file not found")
    (tmp_path / "afile").write_text("x")
    _refused(tmp_path / "afile" / "m.safetensors", "model file not found")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydir").mkdir()
    _refused("mydir", "mydir", "is a folder")  # a bare name of a local folder is not "no shipped model"
    _refused(".", "is a folder")
    _refused("no-such-model", "no shipped model named 'no-such-model'")


def test_a_fifo_is_not_opened(tmp_path):
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    _refused(fifo, "not a regular file")  # and does not block reading it


# --- the model argument ------------------------------------------------------------------------


@pytest.mark.parametrize("arg", [123, 1.5, None, True, ["edge"], {"name": "edge"}, object()])
def test_load_model_of_a_non_path_is_a_type_error(arg):
    with pytest.raises(InputTypeError, match="shipped name .* or a .safetensors path, got"):
        load_model(arg)


def test_empty_and_nul_names(tmp_path):
    _refused("", "empty")
    _refused(b"", "empty")
    _refused(str(tmp_path / "a\0b.safetensors"), "NUL")


def test_bytes_and_path_like_are_paths(good):
    class BytesPath:
        def __fspath__(self):
            return os.fsencode(good)

    class BadPath:
        def __fspath__(self):
            return 42

    for arg in (os.fsencode(good), BytesPath(), good, str(good)):
        assert load_model(arg).config == preset("tiny")
    with pytest.raises(InputTypeError, match="not a valid path"):
        load_model(BadPath())
    assert load_model(b"edge").config == preset("edge")


def test_denoiser_takes_a_bytes_name_and_refuses_bad_models(good):
    den = Denoiser(model=b"edge", device="cpu")
    assert den.config == preset("edge")
    nan = _parts(good)[0][_KEY].clone()
    nan.view(-1)[0] = math.nan
    with pytest.raises(ModelError, match="encoder.head.weight"):
        Denoiser(model=_rewrite(good, "nan.safetensors", tensors={_KEY: nan}), device="cpu")
    with pytest.raises(ModelError, match="JSON array"):
        Denoiser(model=os.fsencode(_rewrite(good, "list.safetensors", raw="[]")), device="cpu")


# --- the CLI -----------------------------------------------------------------------------------


def _nan_model(good: Path) -> Path:
    t, _ = _parts(good)
    bad = t[_KEY].clone()
    bad.view(-1)[0] = math.nan
    return _rewrite(good, "bad.safetensors", tensors={_KEY: bad})


def test_cli_refuses_a_nan_model_in_one_line_and_writes_nothing(good):
    tmp = good.parent
    bad = _nan_model(good)
    np.save(tmp / "v.npy", np.zeros((2, 32, 32), np.float32))
    r = subprocess.run(
        [sys.executable, "-m", "ctdn", "denoise", "v.npy", "out.npy", "--model", bad.name, "--dose", "0.25"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("ctdn: error:") and "bad.safetensors" in lines[0] and _KEY in lines[0]
    assert not (tmp / "out.npy").exists()


def _empty(good: Path) -> Path:
    path = good.parent / "bad.safetensors"
    path.write_bytes(b"")
    return path


def _folder(good: Path) -> Path:
    path = good.parent / "bad.safetensors"
    path.mkdir()
    return path


def _no_config(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "config"}


@pytest.mark.parametrize(
    "make",
    [
        lambda g: _rewrite(g, "bad.safetensors", meta=lambda m: {**m, "hu_window": [-1e308, 1e308]}),
        lambda g: _rewrite(g, "bad.safetensors", raw="[1, 2]"),
        lambda g: _rewrite(g, "bad.safetensors", meta=_no_config),
        _empty,
        _folder,
    ],
    ids=["huge-window", "json-list", "no-config", "empty-file", "folder"],
)
def test_cli_refuses_bad_models_in_one_line(good, capsys, make):
    bad = make(good)
    assert bad.name == "bad.safetensors"
    tmp = good.parent
    np.save(tmp / "v.npy", np.zeros((2, 32, 32), np.float32))
    code = main(["denoise", str(tmp / "v.npy"), str(tmp / "out.npy"), "--model", str(bad), "--dose", "0.25"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("ctdn: error:") and str(bad) in err, err
    assert not (tmp / "out.npy").exists()

"""fxexport.verification: each failure mode is a real broken artifact run in its runtime, not a mock."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import fxexport
from fxexport import create_feature_extractor, export_onnx, export_torchscript
from fxexport.errors import InvalidInputError, VerificationError
from fxexport.formats import read_manifest
from fxexport.formats.torchscript import TORCHSCRIPT_EXTRA_FILE
from fxexport.manifest import MANIFEST_KEY, Manifest, TensorSpec
from fxexport.compare import Problem, ProblemKind
from fxexport.verification import (
    OutputCheck,
    Tolerance,
    VerifyReport,
    compare_tensors,
    make_inputs,
    verify,
)

REPO = Path(__file__).resolve().parents[1]

# The hand-made artifacts use torch's legacy exporter and torch.jit on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning"),
]


# --------------------------------------------------------------------------- artifacts


class BatchFlatten(nn.Module):
    """``int()`` of a size: fine in eager, but a trace (torch.onnx's legacy exporter) bakes the example batch."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1)


class TinyNet(nn.Module):
    def __init__(self, scale: float = 1.0, noise: float = 0.0, fixed_batch: bool = False, zero: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 4)
        self.flat = BatchFlatten()
        self.scale, self.noise, self.fixed_batch, self.zero = scale, noise, fixed_batch, zero

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        if self.noise:
            a = a + self.noise * torch.randn_like(a)  # random in eval mode too: nondeterministic
        b = torch.relu(self.conv2(a))
        if self.zero:
            b = b * 0.0
        pooled = b.mean((2, 3))
        if self.fixed_batch:
            self.flat(pooled)  # a node of its own, extracted as output "flat"
        return self.head(pooled) * self.scale


NODES = {"conv1": "f1", "conv2": "f2", "head": "logits"}


class _Flat(nn.Module):
    """The extractor's dict as a tuple in name order (what the export layer does)."""

    def __init__(self, extractor, names):
        super().__init__()
        self.extractor, self.names = extractor, list(names)

    def forward(self, x):
        out = self.extractor(x)
        return tuple(out[n] for n in self.names)


def _manifest(extractor, example, fmt, nodes, dynamic=("batch",)) -> Manifest:
    with torch.no_grad():
        outs = extractor(example)

    def dims(shape):
        return ["batch" if (i == 0 and "batch" in dynamic) else int(d) for i, d in enumerate(shape)]

    return Manifest(
        format=fmt,
        inputs=[TensorSpec("x", dims(example.shape), str(example.dtype).replace("torch.", ""))],
        outputs=[TensorSpec(n, dims(t.shape), str(t.dtype).replace("torch.", "")) for n, t in outs.items()],
        nodes=dict(nodes), dynamic=list(dynamic),
    )


def export_onnx_artifact(extractor, example, path, nodes=NODES, dynamic=("batch",), model_info=None) -> Path:
    """Plain torch.onnx.export of the flattened extractor + the fxexport manifest in metadata_props.

    For artifacts that fxexport.export_onnx rightly refuses to write (a baked-in batch,
    a nondeterministic model) but that a user can still make by hand.
    """
    manifest = _manifest(extractor, example, "onnx", nodes, dynamic)
    if model_info:
        manifest.model = dict(model_info)
    names = manifest.output_names
    axes = {n: {0: "batch"} for n in ["x", *names]} if "batch" in dynamic else None
    torch.onnx.export(_Flat(extractor, names).eval(), (example,), str(path), dynamo=False, input_names=["x"],
                      output_names=names, dynamic_axes=axes)
    model = onnx.load(str(path))
    prop = model.metadata_props.add()
    prop.key, prop.value = MANIFEST_KEY, manifest.to_json()
    onnx.save(model, str(path))
    return Path(path)


def export_torchscript_artifact(extractor, example, path, nodes=NODES) -> Path:
    manifest = _manifest(extractor, example, "torchscript", nodes)
    traced = torch.jit.trace(_Flat(extractor, manifest.output_names).eval(), (example,))
    torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA_FILE: manifest.to_json()})
    return Path(path)


def edit_onnx(src: Path, dst: Path, edit) -> Path:
    """Load an exported ONNX file, break it with ``edit(model)``, save it (manifest untouched)."""
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _model(**kwargs) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(**kwargs).eval()


def _extractor(**kwargs):
    # BatchFlatten is a leaf: torch.fx cannot trace int() of a size either.
    return create_feature_extractor(_model(**kwargs), NODES, tracer_kwargs={"leaf_modules": [BatchFlatten]})


EXAMPLE = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Artifacts written by fxexport's export layer; the broken ones below are edits of them."""
    folder = tmp_path_factory.mktemp("verify")
    ext = _extractor()
    onnx_path = folder / "tiny.onnx"
    export_onnx(ext, (EXAMPLE,), onnx_path, dynamic=("batch",), exporter="torchscript")
    ts_path = folder / "tiny.pt"
    export_torchscript(ext, (EXAMPLE,), ts_path)
    return ext, onnx_path, ts_path, folder


def _failed(report: VerifyReport) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in report.failures:
        out.setdefault(c.name, []).extend(c.problems)
    return out


def _table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of a rendered report table (rows that wrap continue without a runtime)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines()
            if line.startswith("│ ") and line.split("│")[1].strip()]


# --------------------------------------------------------------------------- passing


def test_good_artifacts_pass_in_both_runtimes(good, tmp_path):
    ext, onnx_path, ts_path, _ = good
    report = verify([onnx_path, ts_path], ext)
    assert report.ok, report.render()
    assert fxexport.VerifyReport is VerifyReport and fxexport.OutputCheck is OutputCheck and fxexport.verify is verify
    assert [a["runtime"] for a in report.artifacts] == ["onnxruntime", "torchscript"]
    # batch is dynamic: sizes 1 and 3 (not the export's 2), cycled over 3 input sets
    assert report.inputs == [[[1, 3, 16, 16]], [[3, 3, 16, 16]], [[1, 3, 16, 16]]]
    assert len(report.checks) == 2 * 3 * 3
    for c in report.checks:
        assert c.ok and c.position == c.expected_position and c.shape == c.expected_shape
        assert c.cosine > 0.9999 and c.mismatch == 0.0 and c.max_abs < 1e-4
    # time split is reported
    for key in ("reference", "onnxruntime.load", "onnxruntime.run", "torchscript.load", "torchscript.run", "compare"):
        assert report.timings[key] >= 0.0
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert data["ok"] is True and len(data["checks"]) == 18
    assert all(c["problems"] == [] and c["kinds"] == [] for c in data["checks"])
    assert json.loads((tmp_path / "r.json").read_text()) == data
    text = report.render()
    assert text.startswith("verify PASS") and "f1" in text and "logits" in text


def test_static_artifact_gets_inputs_it_accepts(good):
    """A fixed-shape ONNX file beside a dynamic one: each runs only on inputs its manifest allows."""
    ext, onnx_path, _, folder = good
    static = folder / "static.onnx"
    export_onnx(ext, (EXAMPLE,), static, exporter="torchscript")
    assert read_manifest(str(static)).inputs[0].shape == [2, 3, 16, 16]
    report = verify([static, onnx_path], ext)  # inputs follow the dynamic one: batch 1, 3, 1
    assert report.ok, report.render()
    by_artifact = {}
    for c in report.checks:
        by_artifact.setdefault(Path(c.artifact).name, set()).add(tuple(report.inputs[c.input_index][0]))
    assert by_artifact["tiny.onnx"] == {(1, 3, 16, 16), (3, 3, 16, 16)}
    assert by_artifact["static.onnx"] == {(2, 3, 16, 16)}
    assert any("static.onnx" in n and "not run" in n for n in report.notes)


def test_tolerance_scales_with_output_magnitude():
    """float32 rounding in long sums grows with the output's largest values (atol floor 1e-5*max|ref|)."""
    ref = torch.tensor([245.0, 0.1, -3.0])
    out = ref + torch.tensor([0.0, 3.8e-4, 0.0])  # resnet50 layer4 vs onnxruntime, measured
    assert compare_tensors("feat4", ref, out, Tolerance(rtol=1e-3, atol=1e-4)).ok
    exact = Tolerance(rtol=1e-3, atol=1e-4, dtype_floor=False)
    assert not compare_tensors("feat4", ref, out, exact).ok
    assert not compare_tensors("feat4", ref, ref + torch.tensor([0.0, 5e-3, 0.0]), Tolerance(rtol=1e-3, atol=1e-4)).ok


def test_user_inputs_and_runtime_filter(good):
    ext, onnx_path, ts_path, _ = good
    x = torch.randn(5, 3, 16, 16)
    report = verify([onnx_path, ts_path], ext, inputs=[x, (x[:2],)], runtimes=["torchscript"])
    assert report.ok and {c.runtime for c in report.checks} == {"torchscript"}
    assert report.inputs == [[[5, 3, 16, 16]], [[2, 3, 16, 16]]]


def test_extractor_mode_is_restored(good):
    ext, onnx_path, _, _ = good
    ext.train()
    try:
        assert verify(onnx_path, ext, n_inputs=1).ok  # compared in the manifest's eval mode
        assert ext.training
    finally:
        ext.eval()


# --------------------------------------------------------------------------- broken artifacts


def test_initializer_changed_after_export(good):
    ext, onnx_path, _, folder = good

    def bump(model):
        init = model.graph.initializer[0]
        arr = numpy_helper.to_array(init).copy()
        arr.flat[: arr.size // 4] += 0.05
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    report = verify(edit_onnx(onnx_path, folder / "bumped.onnx", bump), ext)
    assert not report.ok
    assert any("outside atol+rtol*|ref|" in p for p in report.failures[0].problems)
    worst = report.failures[0]
    assert worst.max_abs > 1e-3 and worst.mismatch > 0 and worst.cosine < 1.0
    text = report.render()
    assert text.startswith("verify FAIL")
    # worst output first in the table
    body = text.split("\n", 1)[1]
    assert body.index(worst.name) < min(body.index(n) for n in ("f1", "f2", "logits") if n != worst.name)


def test_torchscript_weights_changed_after_export(good):
    ext, _, ts_path, folder = good
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    module = torch.jit.load(str(ts_path), _extra_files=extra)
    with torch.no_grad():
        next(iter(module.parameters())).add_(0.05)
    broken = folder / "bumped.pt"
    torch.jit.save(module, str(broken), _extra_files=extra)
    report = verify([ts_path, broken], ext, n_inputs=1)
    assert not report.ok
    assert {Path(c.artifact).name for c in report.failures} == {"bumped.pt"}
    assert "torchscript (bumped.pt)" in report.render()


def test_outputs_swapped_in_order(good):
    ext, onnx_path, _, folder = good

    def swap(model):
        outs = list(model.graph.output)
        del model.graph.output[:]
        model.graph.output.extend([outs[1], outs[0], outs[2]])

    report = verify(edit_onnx(onnx_path, folder / "swapped.onnx", swap), ext)
    assert not report.ok
    failed = _failed(report)
    assert set(failed) == {"f1", "f2"}
    assert any("at position 1, expected 0" in p for p in failed["f1"])
    assert all(c.kinds[0] is ProblemKind.POSITION for c in report.failures)


def test_outputs_mislabeled(good):
    """Names swapped while values stay in place: a consumer reading 'f1' gets conv2's tensor."""
    ext, _, _, folder = good
    # Export with the output names in the wrong order: torch.onnx's output_names renames by position.
    manifest = _manifest(ext, EXAMPLE, "onnx", NODES)
    path = folder / "mislabeled.onnx"
    torch.onnx.export(_Flat(ext, ["f1", "f2", "logits"]).eval(), (EXAMPLE,), str(path), dynamo=False,
                      input_names=["x"], output_names=["f2", "f1", "logits"],
                      dynamic_axes={n: {0: "batch"} for n in ["x", "f1", "f2", "logits"]})
    model = onnx.load(str(path))
    prop = model.metadata_props.add()
    prop.key, prop.value = MANIFEST_KEY, manifest.to_json()
    onnx.save(model, str(path))
    failed = _failed(verify(path, ext))
    assert any(p.startswith("shape") for p in failed["f1"]) and any(p.startswith("shape") for p in failed["f2"])


def test_missing_output(good):
    ext, onnx_path, _, folder = good
    report = verify(edit_onnx(onnx_path, folder / "missing.onnx", lambda m: m.graph.output.pop(1)), ext)
    assert not report.ok
    worst = report.failures[0]
    assert worst.name == "f2" and worst.problems[0].startswith("missing")
    kinds = {(c.name, k) for c in report.failures for k in c.kinds}
    assert kinds == {("f2", ProblemKind.MISSING), ("logits", ProblemKind.POSITION)}  # logits moved up one
    assert json.loads(report.to_json())["checks"][1]["kinds"] == ["missing"]
    assert "f2" in report.render().split("\n")[0]


def test_fixed_batch_declared_dynamic(tmp_path):
    nodes = {"conv1": "f1", "flat": "flat", "head": "logits"}
    ext = create_feature_extractor(_model(fixed_batch=True), nodes, tracer_kwargs={"leaf_modules": [BatchFlatten]})
    with pytest.warns(torch.jit.TracerWarning):
        path = export_onnx_artifact(ext, EXAMPLE, tmp_path / "fixed.onnx", nodes=nodes)
    # At the export's batch size everything matches ...
    assert verify(path, ext, inputs=torch.randn(2, 3, 16, 16)).ok
    # ... and only another batch size shows the baked-in batch: (2, 8) instead of (1, 16).
    report = verify(path, ext)
    assert not report.ok
    failed = _failed(report)
    assert set(failed) == {"flat"}
    assert "shape (2, 8) != expected (1, 16)" in failed["flat"]
    assert "shape (2, 24) != expected (3, 16)" in failed["flat"]
    assert any("baked in" in n for n in report.notes)


def test_nondeterministic_model_in_eval(tmp_path):
    ext = _extractor(noise=0.05)
    path = export_onnx_artifact(ext, EXAMPLE, tmp_path / "noisy.onnx")
    report = verify(path, ext)
    assert not report.ok
    assert any("nondeterministic" in n for n in report.notes), report.notes


# --------------------------------------------------------------------------- tolerance edges


def test_float16_outputs(tmp_path):
    """A model computing in float16: metrics in float64 (no fp16 overflow), dtype-aware tolerance."""

    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 256)
            self.fc2 = nn.Linear(256, 32)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x.flatten(1)))) * 300.0

    torch.manual_seed(0)
    model = Half().half().eval()
    ext = create_feature_extractor(model, {"fc1": "hidden", "mul": "out"})
    example = torch.randn(2, 4, 4, 4).half()
    nodes = {"fc1": "hidden", "mul": "out"}
    path = export_onnx_artifact(ext, example, tmp_path / "half.onnx", nodes=nodes)
    report = verify(path, ext)
    assert report.ok, report.render()
    out = [c for c in report.checks if c.name == "out"]
    assert all(c.dtype == "float16" and c.rtol >= 1e-2 for c in out)
    # |out| reaches thousands: fp16 sums of squares would overflow to inf; cosine must stay finite
    assert all(0.999 < c.cosine <= 1.0 for c in report.checks)
    # A real error in the fp16 artifact is still caught.
    def bump(model):
        init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
        arr = numpy_helper.to_array(init).copy()
        arr *= 1.1
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    broken = verify(edit_onnx(path, tmp_path / "half_bad.onnx", bump), ext)
    assert not broken.ok


def test_huge_magnitudes(tmp_path):
    """Outputs around 1e6: float32 rounding (~0.1 absolute) passes on rtol; a 1% error fails."""
    nodes = {"conv1": "f1", "mul": "logits"}  # "mul" is ``head(...) * 1e6``
    ext = create_feature_extractor(_model(scale=1e6), nodes)
    path = export_onnx_artifact(ext, EXAMPLE, tmp_path / "huge.onnx", nodes=nodes)
    report = verify(path, ext)
    assert report.ok, report.render()
    logits = [c for c in report.checks if c.name == "logits"]
    assert max(c.max_abs for c in logits) > 1e-4  # atol alone would have failed it
    assert all(c.max_rel < 1e-4 for c in logits)

    def scale_head(model):
        # the head's weight and bias feed the Gemm before the scale: every logit 1% off
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.shape in ((4, 16), (4,)):
                init.CopyFrom(numpy_helper.from_array((arr * 1.01).astype("float32"), init.name))

    broken = verify(edit_onnx(path, tmp_path / "huge_bad.onnx", scale_head), ext)
    failed = _failed(broken)
    assert set(failed) == {"logits"}
    worst = broken.failures[0]
    assert 5e-3 < worst.max_rel < 5e-2 and worst.cosine > 0.99  # relative error is what shows it


def test_all_zero_outputs(tmp_path):
    """An all-zero output: cosine is defined (1.0), the JSON holds no NaN."""
    nodes = {"conv1": "f1", "mul": "z"}  # "mul" is ``b * 0.0``
    ext = create_feature_extractor(_model(zero=True), nodes)
    path = export_onnx_artifact(ext, EXAMPLE, tmp_path / "zero.onnx", nodes=nodes)
    report = verify(path, ext)
    assert report.ok, report.render()
    zero = [c for c in report.checks if c.name == "z"]
    assert zero and all(c.cosine == 1.0 and c.max_abs == 0.0 and c.max_rel == 0.0 for c in zero)
    text = report.to_json()
    assert "NaN" not in text and json.loads(text)["ok"] is True


def test_compare_tensors_edges():
    tol = Tolerance(rtol=1e-3, atol=1e-4)
    zeros = torch.zeros(3, 4)
    check = compare_tensors("z", zeros, torch.ones(3, 4), tol)
    assert not check.ok and check.cosine == 0.0 and check.mismatch == 1.0
    inf = torch.tensor([1.0, float("inf"), float("nan")])
    assert compare_tensors("i", inf, inf.clone(), tol).ok
    bad = compare_tensors("i", inf, torch.tensor([1.0, 1.0, 1.0]), tol)
    assert not bad.ok and bad.max_abs == float("inf")
    assert json.loads(json.dumps(bad.to_dict(), allow_nan=False))["max_abs"] == "inf"
    empty = compare_tensors("e", torch.zeros(0, 4), torch.zeros(0, 4), tol)
    assert empty.ok and empty.cosine == 1.0
    assert compare_tensors("d", zeros, zeros.double(), tol).problems == ["dtype float64 != expected float32"]
    assert compare_tensors("d", zeros, zeros.double(), Tolerance(check_dtype=False, rtol=0, atol=0)).ok
    assert compare_tensors("s", zeros, zeros[:2], tol).problems == ["shape (2, 4) != expected (3, 4)"]
    f16 = torch.full((10,), 60000.0, dtype=torch.float16)
    c16 = compare_tensors("h", f16, f16.clone(), tol)
    assert c16.ok and c16.cosine == 1.0


# --------------------------------------------------------------------------- thresholds and runners


def test_per_output_thresholds(good):
    ext, onnx_path, _, folder = good

    def bump_head(model):
        init = next(i for i in model.graph.initializer if tuple(numpy_helper.to_array(i).shape) == (4, 16))
        arr = numpy_helper.to_array(init) * 1.002
        init.CopyFrom(numpy_helper.from_array(arr.astype("float32"), init.name))

    path = edit_onnx(onnx_path, folder / "head_bumped.onnx", bump_head)
    assert set(_failed(verify(path, ext))) == {"logits"}
    loose = {"logit*": Tolerance(rtol=5e-2, atol=1e-2, min_cosine=0.999)}
    assert verify(path, ext, tolerances=loose).ok
    strict_cos = {"logits": {"rtol": 1.0, "atol": 1.0, "min_cosine": 0.9999999999}}
    failed = _failed(verify(path, ext, tolerances=strict_cos))
    assert any(p.startswith("cosine") for p in failed["logits"])
    assert verify(path, ext, tolerances={"rtol": 5e-2, "atol": 1e-2}).ok  # fields alone: every output
    with pytest.raises(InvalidInputError, match="unknown key"):
        verify(path, ext, tolerances={"logits": {"rtoll": 1}})


def test_variant_format_gets_its_formats_default_tolerance(good, monkeypatch):
    """A variant format (fp16/int8 files) gets its format module's looser default_tolerance(manifest);
    a per-output threshold given to verify wins over it."""
    from fxexport.formats import for_path

    ext, onnx_path, _, folder = good

    def bump(model):
        init = model.graph.initializer[0]
        arr = numpy_helper.to_array(init) * 1.001
        init.CopyFrom(numpy_helper.from_array(arr.astype("float32"), init.name))

    def retag(model):
        bump(model)
        prop = next(p for p in model.metadata_props if p.key == MANIFEST_KEY)
        manifest = Manifest.from_json(prop.value)
        manifest.format = "onnx-test-loose"
        prop.value = manifest.to_json()

    plain = edit_onnx(onnx_path, folder / "plain.onnx", bump)
    tagged = edit_onnx(onnx_path, folder / "loose.onnx", retag)
    assert not verify(plain, ext).ok
    fmt = for_path(tagged)
    own = getattr(fmt, "default_tolerance", None)
    seen = []

    def default_tolerance(manifest):
        seen.append(manifest.format)
        if manifest.format == "onnx-test-loose":
            return {"rtol": 5e-2, "atol": 5e-2, "min_cosine": 0.999}
        return own(manifest) if own is not None else None

    monkeypatch.setattr(fmt, "default_tolerance", default_tolerance, raising=False)
    report = verify(tagged, ext)
    assert report.ok, report.render()
    assert seen == ["onnx-test-loose"] and {c.min_cosine for c in report.checks} == {0.999}
    assert not verify(plain, ext).ok  # the plain format keeps verify's thresholds
    # a per-output threshold wins over the format's default: logits alone is held to a tight one
    strict = verify(tagged, ext, tolerances={"logits": Tolerance(rtol=0.0, atol=1e-9, dtype_floor=False)})
    assert set(_failed(strict)) == {"logits"}
    assert {c.min_cosine for c in strict.checks if c.name != "logits"} == {0.999}
    assert {c.min_cosine for c in strict.checks if c.name == "logits"} == {None}


def test_runtime_choice_per_artifact(good):
    """runtimes= picks, per artifact, the requested runtimes its format supports: an .onnx runs in OpenVINO."""
    ext, onnx_path, ts_path, _ = good
    report = verify(onnx_path, ext, runtimes=["openvino"], n_inputs=2)
    assert report.ok, report.render()
    assert [a["runtime"] for a in report.artifacts] == ["openvino"]
    assert {c.runtime for c in report.checks} == {"openvino"} and "openvino.run" in report.timings
    both = verify([onnx_path, ts_path], ext, runtimes=["ort", "openvino", "jit"], n_inputs=2)
    assert both.ok, both.render()
    assert [(Path(a["path"]).name, a["runtime"]) for a in both.artifacts] == [
        ("tiny.onnx", "onnxruntime"), ("tiny.onnx", "openvino"), ("tiny.pt", "torchscript")]
    assert len(both.rows()) == 3 * 3  # one row per artifact, runtime and output
    shown = [(row[0], row[1]) for row in _table_rows(both.render())]
    assert shown == [(rt, name) for rt in ("onnxruntime", "openvino", "torchscript") for name in ("f1", "f2", "logits")]


def test_failures_are_ranked_by_kind_not_by_text():
    """Structural problems sort first whatever their message says; value problems by how far outside."""
    def check(name, kind, text, ratio):
        return OutputCheck(name, "onnxruntime", "m.onnx", 0, max_abs=1.0, worst_ratio=ratio,
                           problems=[Problem(kind, text)])

    # messages that text matching would have read the wrong way round
    shape = check("s", ProblemKind.SHAPE, "3 dims where 4 are expected", 2.0)
    values = check("v", ProblemKind.VALUES, "values: 10 of 10 elements outside", 50.0)
    mild = check("m", ProblemKind.VALUES, "1 of 10 elements outside", 1.5)
    fine = OutputCheck("ok", "onnxruntime", "m.onnx", 0, max_abs=0.0, worst_ratio=0.2)
    report = VerifyReport([fine, mild, values, shape], [{"path": "m.onnx", "format": "onnx", "runtime": "onnxruntime"}],
                          [[[1, 3]]], 1e-3, 1e-4)
    assert [c.name for c in report.failures] == ["s", "v", "m"]
    assert shape.severity == float("inf") and values.severity == 50.0
    assert report.summary().endswith("worst: 's' in onnxruntime: 3 dims where 4 are expected")
    assert [row[1] for row in _table_rows(report.render())] == ["s", "v", "m", "ok"]
    assert [c["kinds"] for c in report.to_dict()["checks"]] == [[], ["values"], ["values"], ["shape"]]


def test_runtime_cannot_load_is_a_failure(good):
    ext, onnx_path, _, folder = good

    def corrupt(model):
        model.graph.node[0].op_type = "NoSuchOp"

    report = verify(edit_onnx(onnx_path, folder / "corrupt.onnx", corrupt), ext)
    assert not report.ok and "cannot load" in report.failures[0].problems[0]
    assert report.failures[0].kinds == [ProblemKind.LOAD] and report.failures[0].runtime == "onnxruntime"


# --------------------------------------------------------------------------- bad input (CLI exit 2)


def test_bad_input_raises(good, tmp_path):
    ext, onnx_path, _, _ = good
    with pytest.raises(VerificationError, match="does not exist"):
        verify(tmp_path / "nope.onnx", ext)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(_Flat(ext, ["f1"]).eval(), (EXAMPLE,), str(plain), dynamo=False)
    with pytest.raises(VerificationError, match="no fxexport manifest"):
        verify(plain, ext)
    with pytest.raises(InvalidInputError, match="unknown runtime"):
        verify(onnx_path, ext, runtimes=["tensorrt"])
    runs_in = r"none of the artifacts runs in \['torchscript'\] \(they run in \['onnxruntime', 'openvino'\]\)"
    with pytest.raises(InvalidInputError, match=runs_in):
        verify(onnx_path, ext, runtimes=["torchscript"])
    with pytest.raises(InvalidInputError, match="not dynamic dims"):
        verify(onnx_path, ext, sizes={"height": [8]})
    with pytest.raises(InvalidInputError, match="n_inputs"):
        verify(onnx_path, ext, n_inputs=0)
    with pytest.raises(InvalidInputError, match="no model spec"):
        verify(onnx_path)


def test_make_inputs_sizes():
    m = Manifest("onnx", [TensorSpec("x", ["batch", 3, "height", "width"])], [], dynamic=["batch", "height", "width"])
    sets = make_inputs(m, n_inputs=1, sizes={"batch": [2], "height": [32, 48, 64]}, base_shapes=[[1, 3, 40, 40]])
    assert [tuple(s[0].shape) for s in sets] == [(2, 3, 32, 40), (2, 3, 48, 72), (2, 3, 64, 40)]
    again = make_inputs(m, n_inputs=1, sizes={"batch": [2], "height": [32, 48, 64]}, base_shapes=[[1, 3, 40, 40]])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(sets, again))  # seeded


# --------------------------------------------------------------------------- rebuilt reference


def test_reference_rebuilt_from_manifest(tmp_path):
    """No extractor: the model spec, node map and weights recorded in the manifest rebuild it."""
    from safetensors.torch import save_file

    from fxexport.models import load_model, model_info

    spec = f"{REPO / 'models' / 'multitask.py'}:build"
    nodes = {"trunk.stage2": "mid", "cls_head.fc": "logits"}
    model = load_model(spec, seed=3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    ext = create_feature_extractor(model, nodes)
    path = tmp_path / "mt.onnx"
    export_onnx(ext, (torch.randn(2, 3, 64, 64),), path, dynamic=("batch",), exporter="torchscript",
                model_info=model_info(spec, weights=weights))
    assert read_manifest(str(path)).model["spec"] == spec
    report = verify(path, n_inputs=2, weights=weights, trust_model_spec=True)  # a file spec: the user trusts it
    assert report.ok, report.render()
    assert [c.name for c in report.checks[:2]] == ["mid", "logits"]
    assert report.inputs == [[[1, 3, 64, 64]], [[3, 3, 64, 64]]]
    with pytest.raises(InvalidInputError, match="weights"):
        verify(path, n_inputs=1, trust_model_spec=True)  # exported with a weights file: it must be given
    # an extractor that is not the exported one is caught
    with torch.no_grad():
        model.cls_head.fc.weight.mul_(1.01)
    assert not verify(path, create_feature_extractor(model, nodes), n_inputs=1).ok


def test_train_mode_export_leaves_the_extractor_as_it_was(tmp_path):
    """A train-mode artifact is compared in train mode; the extractor's mode and BN statistics are restored."""

    class BNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    ext = create_feature_extractor(BNNet(), {"bn": "feat", "fc": "logits"}).train()
    path = tmp_path / "train.onnx"
    manifest = export_onnx(ext, (torch.randn(2, 3, 8, 8),), path, dynamic=("batch",), exporter="torchscript")
    assert manifest.mode == "train"
    ext.eval()
    before = {k: v.clone() for k, v in ext.state_dict().items()}
    report = verify(path, ext, sizes={"batch": [2, 4]})  # batch statistics need batch > 1
    assert report.ok, report.render()
    assert not ext.training
    assert all(torch.equal(before[k], v) for k, v in ext.state_dict().items())

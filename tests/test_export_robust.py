"""Issue 11 items 3-5: stochastic models export and verify says why they differ; reports never claim
what was not checked; ONNX files above 2 GB are an atomic, content-named, same-mode pair."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import fxexport.formats.onnx as onnx_export
from fxexport import ExportError, create_feature_extractor, export_onnx, read_manifest, verify
from fxexport._io import file_mode
from fxexport.cli import main
from fxexport.edge import EdgeReport, OutputResult, VariantResult, optimize
from fxexport.errors import VerificationError
from fxexport.formats import common as _common
from fxexport.formats import describe_artifact
from fxexport.formats.torchscript import export_torchscript

from _examples import ROOT, two_head_extractor

NOISY = str(ROOT / "models" / "noisy.py") + ":build"
NOISY_NODES = {"conv": "features", "add": "noisy"}


def noisy_extractor():
    from models.noisy import build

    return create_feature_extractor(build(), NOISY_NODES)


def x32(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def failed_outputs(report) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


# -- item 3: a nondeterministic reference is not a broken export ---------------------------------


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_stochastic_model_exports_and_verify_names_the_nondeterministic_output(tmp_path, fmt):
    ex = noisy_extractor()
    path = tmp_path / ("noisy.onnx" if fmt == "onnx" else "noisy.pt")
    export = export_onnx if fmt == "onnx" else export_torchscript
    with pytest.warns(UserWarning, match=r"'noisy' differ between two eager runs.*names, shapes and dtypes only"):
        m = export(ex, x32(), path)
    assert path.is_file()
    assert m.extra["nondeterministic_outputs"] == ["noisy"]
    assert read_manifest(str(path)) == m  # recorded in the file, not only in the returned object
    report = verify(path, ex, n_inputs=2)
    assert not report.ok and failed_outputs(report) == {"noisy"}  # 'features' is deterministic and passes
    notes = [n for n in report.notes if "nondeterministic" in n]
    assert len(notes) == 1 and notes[0].startswith("output 'noisy': the reference itself is nondeterministic")
    assert "recorded it too" in notes[0]


def test_cli_export_of_a_stochastic_model_writes_it_and_verify_exits_1(tmp_path, capsys):
    out = tmp_path / "noisy.onnx"
    code = main(["export", NOISY, "--input-shape", "1,3,32,32", "--node", "conv=features", "--node", "add=noisy",
                 "--onnx", str(out), "--verify"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert out.is_file() and "fxexport: error" not in captured.err
    assert "fxexport: warning: the extractor's output(s) 'noisy' differ" in captured.err
    printed = " ".join(captured.out.split())  # rich wraps long notes
    assert "note: output 'noisy': the reference itself is nondeterministic in eval mode" in printed
    assert "output 'features'" not in printed


def test_a_broken_export_of_a_deterministic_model_still_fails():
    ex = two_head_extractor()
    p = _common.plan(ex, torch.rand(1, 3, 64, 64), None, None)
    wrong = [t.clone() for t in p.flat]
    wrong[1] = wrong[1] + 1.0  # 'det.0' is wrong; the eager model reproduces itself
    with pytest.raises(ExportError, match=r"the test artifact: output 'det.0' differs from the extractor's"):
        p.check_artifact("the test artifact", lambda inputs: wrong)
    assert p.nondeterministic == {}
    # swapped outputs of equal shape are caught too
    swapped = list(p.flat)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(ExportError, match="differs from the extractor's"):
        p.check_artifact("the test artifact", lambda inputs: swapped)


def test_nondeterministic_outputs_are_still_checked_for_shape_and_dtype():
    ex = noisy_extractor()
    p = _common.plan(ex, x32(), None, None)
    with pytest.warns(UserWarning, match="nondeterministic"):
        p.check_artifact("AOTI-like", lambda inputs: p.rerun(inputs))  # another draw of the noise: accepted
    assert set(p.nondeterministic) == {"noisy"} and p.manifest_extra() == {"nondeterministic_outputs": ["noisy"]}
    with pytest.raises(ExportError, match="output 'noisy' has dtype float64, the extractor gives float32"):
        p.check_artifact("AOTI-like", lambda inputs: [p.flat[0], p.rerun(inputs)[1].double()])
    with pytest.raises(ExportError, match="output 'noisy' has shape"):
        p.check_artifact("AOTI-like", lambda inputs: [p.flat[0], p.flat[1][:, :2]])
    with pytest.raises(ExportError, match="output 'features' differs"):  # the deterministic one keeps its check
        p.check_artifact("AOTI-like", lambda inputs: [p.flat[0] * 2, p.flat[1]])


def test_a_faithful_export_never_runs_the_reference_twice(tmp_path, monkeypatch):
    def refuse(self, inputs):
        raise AssertionError("the reference ran a second time for a faithful export")

    monkeypatch.setattr(_common.Plan, "rerun", refuse)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*differ between two eager runs")  # and no such warning
        m = export_onnx(two_head_extractor(), torch.rand(1, 3, 64, 64), tmp_path / "th.onnx", dynamic="batch")
        ts = export_torchscript(two_head_extractor(), torch.rand(1, 3, 64, 64), tmp_path / "th.pt", method="trace")
    assert "nondeterministic_outputs" not in m.extra and "nondeterministic_outputs" not in ts.extra


# -- item 4: reports do not claim what was not checked -------------------------------------------


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("edge_small") / "th.onnx"
    ex = two_head_extractor()
    export_onnx(ex, torch.rand(1, 3, 64, 64), path)
    return path, ex


def test_optimize_without_verification_is_not_ok_and_never_says_pass(small_onnx, tmp_path):
    src, ex = small_onnx
    report = optimize(src, fp16=True, out_dir=tmp_path, extractor=ex, verify=False, measure=False)
    assert [v.name for v in report.variants] == ["fp32", "optimized", "fp16"]
    assert not report.ok and not report.compared and not any(v.ok for v in report.variants)
    text = report.render()
    for claim in ("PASS", "every output within its thresholds", " ok "):
        assert claim not in text and claim not in report.summary()
    assert report.summary().startswith("optimize NOT VERIFIED: 3 artifact(s) from th.onnx; nothing was compared")
    assert text.count("not verified") == 3  # one per table row
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["compared"] is False and "PASS" not in data["summary"]
    assert all(v["ok"] is False and v["verified"] is False for v in data["variants"])
    # the same variants, verified, do pass
    checked = optimize(src, fp16=True, out_dir=tmp_path, extractor=ex, measure=False)
    assert checked.ok and checked.summary().startswith("optimize PASS")


def test_an_empty_report_is_not_ok():
    empty = EdgeReport(source="m.onnx", variants=[])
    assert not empty.ok and "PASS" not in empty.summary() and "NOT VERIFIED" in empty.summary()
    nothing = VariantResult(name="fp32", path="m.onnx", format="onnx", precision="fp32", size_bytes=1,
                            size_ratio=1.0, verified=True)  # verified, but no output was compared
    report = EdgeReport(source="m.onnx", variants=[nothing])
    assert not nothing.ok and not report.ok and "PASS" not in report.summary()
    assert "nothing compared" in report.render()
    good = VariantResult(name="fp32", path="m.onnx", format="onnx", precision="fp32", size_bytes=1, size_ratio=1.0,
                         verified=True, outputs=[OutputResult("y", 1.0, 0.0, 0.0, ok=True)])
    mixed = EdgeReport(source="m.onnx", variants=[good, VariantResult(
        name="fp16", path="m16.onnx", format="onnx-fp16", precision="fp16", size_bytes=1, size_ratio=1.0)])
    assert good.ok and not mixed.ok
    assert mixed.summary().startswith("optimize NOT VERIFIED") and "not verified: fp16" in mixed.summary()
    from fxexport.verification import VerifyReport

    nothing_verified = VerifyReport(checks=[], artifacts=[], inputs=[], rtol=1e-3, atol=1e-4)
    assert not nothing_verified.ok and "PASS" not in nothing_verified.summary()
    assert "nothing was compared" in nothing_verified.summary()


def test_cli_optimize_that_compared_nothing_exits_1_without_pass(small_onnx, tmp_path, capsys, monkeypatch):
    import fxexport.edge as edge

    src, _ = small_onnx
    monkeypatch.setattr(edge, "_verify_variants", lambda *a, **k: None)  # a verification that compared nothing
    args = ["optimize", str(src), "-o", str(tmp_path), "--no-timing", "--trust-model-spec"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "PASS" not in out and "optimize NOT VERIFIED" in out
    assert main(args + ["--quiet"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "NOT VERIFIED"
    assert main(args + ["--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["compared"] is False


# -- item 5: > 2 GB: the .onnx and its content-named data file are one artifact ------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def external_locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}


def assert_pair(path: Path, record: dict) -> None:
    data = path.parent / record["location"]
    assert record["location"] == f"{path.name}.{record['sha256'][:16]}.data"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, data.name])  # no temp files
    assert hashlib.sha256(data.read_bytes()).hexdigest() == record["sha256"]
    assert data.stat().st_size == record["bytes"]
    assert external_locations(path) == {data.name}
    assert mode_of(path) == mode_of(data) == file_mode()


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 1024)  # pretend 2 GB is 1 KB


def seeded_two_head(seed: int):
    ex = two_head_extractor()
    with torch.no_grad():
        for k, prm in enumerate(ex.parameters()):
            prm.copy_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(seed * 100 + k)) * 0.1)
    return ex


def test_pair_is_content_named_same_mode_and_reexport_is_byte_identical(tmp_path, small_threshold, capsys):
    path = tmp_path / "big.onnx"
    ex = seeded_two_head(1)
    x = torch.rand(1, 3, 64, 64)
    m = export_onnx(ex, x, path, exporter="torchscript")
    record = m.extra["external_data"]
    assert_pair(path, record)
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert export_onnx(ex, x, path, exporter="torchscript") == m
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first  # same names, same bytes
    assert verify(path, ex).ok
    info = describe_artifact(path)
    total = path.stat().st_size + record["bytes"]
    assert info["size_bytes"] == total and info["facts"]["external_data_bytes"] == record["bytes"]
    assert info["facts"]["external_data"] == record["location"]
    from fxexport.display import artifact_bytes, file_size

    assert file_size(artifact_bytes(path, m)) == file_size(total) != file_size(path.stat().st_size)
    assert main(["inspect", str(path)]) == 0
    assert f"({file_size(total)}" in capsys.readouterr().out


def test_new_weights_replace_the_pair_and_remove_only_the_superseded_data(tmp_path, small_threshold, monkeypatch):
    path = tmp_path / "big.onnx"
    x = torch.rand(1, 3, 64, 64)
    old = export_onnx(seeded_two_head(1), x, path, exporter="torchscript").extra["external_data"]
    keep = [tmp_path / "big.onnx.data", tmp_path / f"other.onnx.{'0' * 16}.data"]  # not this file's own data
    for f in keep:
        f.write_bytes(b"someone else's")
    new = export_onnx(seeded_two_head(2), x, path, exporter="torchscript").extra["external_data"]
    assert new["location"] != old["location"] and not (tmp_path / old["location"]).exists()
    assert all(f.read_bytes() == b"someone else's" for f in keep)
    for f in keep:
        f.unlink()
    assert_pair(path, new)
    # a small model over the pair: the superseded data goes too
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 2 * 1024**3)
    m = export_onnx(seeded_two_head(3), x, path, exporter="torchscript")
    assert m.extra["external_data"] is False and sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx"]


@pytest.mark.parametrize("stage", ["check", "commit"])
def test_a_failed_export_keeps_the_old_pair_and_leaves_no_new_file(tmp_path, small_threshold, monkeypatch, stage):
    path = tmp_path / "big.onnx"
    x = torch.rand(1, 3, 64, 64)
    export_onnx(seeded_two_head(1), x, path, exporter="torchscript")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if stage == "check":
        def broken(model, p, exporter):
            assert any(Path(model).parent.glob("big.onnx.*.data"))  # the new data file exists, staged
            raise ExportError(f"{exporter}: simulated check failure")

        monkeypatch.setattr(onnx_export, "_check_in_onnxruntime", broken)
    else:
        real = os.replace

        def replace(src, dst):
            if Path(dst) == path:  # the commit point fails after the new data file was placed
                raise OSError("simulated: disk full")
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises((ExportError, OSError), match="simulated"):
        export_onnx(seeded_two_head(2), x, path, exporter="torchscript")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    assert verify(path, seeded_two_head(1)).ok


def test_a_mismatched_pair_is_reported_not_run(tmp_path, small_threshold, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    x = torch.rand(1, 3, 64, 64)
    ra = export_onnx(seeded_two_head(1), x, a / "big.onnx", exporter="torchscript").extra["external_data"]
    rb = export_onnx(seeded_two_head(2), x, b / "big.onnx", exporter="torchscript").extra["external_data"]
    assert ra["bytes"] == rb["bytes"]
    # b's weights copied in under a's data name: same size, other content
    (a / ra["location"]).write_bytes((b / rb["location"]).read_bytes())
    for call in (lambda: verify(a / "big.onnx", seeded_two_head(1)), lambda: describe_artifact(a / "big.onnx")):
        with pytest.raises(VerificationError, match=r"does not belong to .*big.onnx.*mismatched pair") as err:
            call()
        assert "\n" not in str(err.value)
    for cmd in (["verify", str(a / "big.onnx")], ["inspect", str(a / "big.onnx")]):
        assert main(cmd) == 2
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and err_lines[0].startswith("fxexport: error: external data"), err_lines
    (a / ra["location"]).unlink()
    with pytest.raises(VerificationError, match="needs its external data file .* which is missing"):
        verify(a / "big.onnx", seeded_two_head(1))
    # b's .onnx copied over a's: it reads b's data file, which is not beside it
    export_onnx(seeded_two_head(1), x, a / "big.onnx", exporter="torchscript")
    (a / "big.onnx").write_bytes((b / "big.onnx").read_bytes())
    with pytest.raises(VerificationError, match=f"needs its external data file '{rb['location']}'"):
        describe_artifact(a / "big.onnx")


# -- item 5 on a real > 2 GB model ----------------------------------------------------------------


class Big(nn.Module):
    """Two 16384x16384 float32 layers: 2 GiB of weights, filled cheaply (a seeded block, tiled)."""

    N = 16384

    def __init__(self, seed: int = 0):
        super().__init__()
        n = self.N
        self.fc1 = nn.utils.skip_init(nn.Linear, n, n)
        self.fc2 = nn.utils.skip_init(nn.Linear, n, n)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2):
                fc.weight.view(n // 256, 256, n).copy_(torch.randn(256, n, generator=g) / n**0.5)
                fc.bias.copy_(torch.randn(n, generator=g))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_model_over_2_gb_exports_as_a_verified_content_named_pair(tmp_path, monkeypatch):
    ex = create_feature_extractor(Big().eval(), {"fc1": "hidden", "fc2": "out"})
    assert onnx_export._weights_bytes(ex) > 2 * 1024**3
    path = tmp_path / "big.onnx"
    x = torch.randn(1, Big.N, generator=torch.Generator().manual_seed(0))
    m = export_onnx(ex, x, path, exporter="torchscript")
    record = m.extra["external_data"]
    assert record["bytes"] > 2 * 1024**3 and path.stat().st_size < 1024**2
    data = tmp_path / record["location"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, data.name])
    assert external_locations(path) == {data.name}
    assert mode_of(path) == mode_of(data) == file_mode()
    assert verify(path, ex, n_inputs=1).ok  # checks the data file's sha256 too
    assert describe_artifact(path)["size_bytes"] == path.stat().st_size + data.stat().st_size
    # a second export that fails after writing its data: the old pair stays, nothing new is left behind
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    staged = []

    def broken(model, p, exporter):
        staged.extend(sorted(f.name for f in Path(model).parent.iterdir()))
        raise ExportError(f"{exporter}: simulated check failure")

    monkeypatch.setattr(onnx_export, "_check_in_onnxruntime", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(ex, x, path, exporter="torchscript")
    assert staged == sorted([path.name, data.name])  # the re-export names its data the same: same bytes
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before

"""The C++ example program (scripts/cpp/fxexport_infer.cpp) runs fxexport artifacts by name.

resnet18 (layer2, layer4) and the multi-task model from models/ are exported to
TorchScript (.pt) and AOTInductor (.pt2); the program, built once against the
libtorch inside the torch wheel and cached in .cache/cpp, runs each on inputs of
another size than the export example and writes every output to .npy; each is
compared by name with the eager extractor: max abs error <= 1e-5 (TorchScript)
or 1e-4 (AOTInductor) times max(1, max|ref|).

Measured on the 2-core dev machine: the program builds in ~31-35 s of CPU
(55-85 s wall while other work shares the cores; it is built in the background
during the first AOTInductor compile), and each AOTInductor compile takes
20-50 s; both are under the 2-minute line, so these run in `make test`. With a
warm build cache this file and test_export_aoti.py take about 2 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from _cpp_artifacts import (
    aoti_package,
    cpp_program,
    example,
    max_scaled_error,
    multitask_extractor,
    resnet18_extractor,
    torchscript_module,
)

from fxexport.cpp import cached_binary_path, compile_command, run_cpp_example
from fxexport.errors import FxExportError
from fxexport.flatten import OutputSpec, flatten

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
    reason="no C++ compiler (apt-get install g++)",
)

TOLERANCE = {"torchscript": 1e-5, "aoti": 1e-4}


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "cpp_artifacts"


def _artifact(which: str, fmt: str, root):
    root.mkdir(parents=True, exist_ok=True)
    return aoti_package(which, root) if fmt == "aoti" else torchscript_module(which, root)


def _eager_flat(extractor, x) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = extractor(x)
    spec = OutputSpec.from_outputs(out)
    return dict(zip(spec.names, flatten(spec, out)))


# AOTInductor first: its compile overlaps the background build of the C++ program.
@pytest.mark.parametrize("which", ["resnet18", "multitask"])
@pytest.mark.parametrize("fmt", ["aoti", "torchscript"])
def test_cpp_program_matches_eager_by_name(which, fmt, artifacts_root, tmp_path):
    path, manifest = _artifact(which, fmt, artifacts_root)
    extractor = resnet18_extractor() if which == "resnet18" else multitask_extractor()
    # Another batch than the export example (2); the multi-task package is also dynamic in height/width.
    x = example(batch=3, height=48, width=80, seed=1) if (which, fmt) == ("multitask", "aoti") else example(3, seed=1)
    ref = _eager_flat(extractor, x)

    got = run_cpp_example(path, x, tmp_path, binary=cpp_program(), threads=2)

    assert list(got) == manifest.output_names == list(ref)
    for name in ref:
        err = max_scaled_error(ref[name], torch.from_numpy(got[name]))
        assert err <= TOLERANCE[fmt], f"{fmt} {which} output '{name}': scaled max abs error {err:.3g}"


def test_cpp_program_prints_names_shapes_checksums_from_raw_input(artifacts_root, tmp_path):
    path, manifest = _artifact("multitask", "aoti", artifacts_root)
    x = example(batch=1, seed=2)
    raw = tmp_path / "x.f32"
    raw.write_bytes(x.numpy().astype("<f4").tobytes())
    proc = subprocess.run([str(cpp_program()), str(path), str(raw), "--shape", "1,3,64,64",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads((tmp_path / "o" / "outputs.json").read_text())
    assert [o["name"] for o in listing["outputs"]] == manifest.output_names
    lines = {line.split("\t")[0]: line for line in proc.stdout.splitlines() if "\tshape=" in line}
    assert list(lines) == manifest.output_names
    ref = _eager_flat(multitask_extractor(), x)
    for item in listing["outputs"]:
        array = np.load(tmp_path / "o" / item["file"])
        assert item["shape"] == list(array.shape) == list(ref[item["name"]].shape)
        assert item["dtype"] == "float32"
        assert f"shape={list(array.shape)}".replace(" ", "") in lines[item["name"]].replace(" ", "")
        assert item["sum"] == pytest.approx(float(array.astype(np.float64).sum()), rel=1e-9, abs=1e-9)
        assert item["abs_sum"] == pytest.approx(float(np.abs(array.astype(np.float64)).sum()), rel=1e-9)


def test_cpp_program_reads_output_names_without_running(artifacts_root):
    for fmt in ("aoti", "torchscript"):
        path, manifest = _artifact("multitask", fmt, artifacts_root)
        proc = subprocess.run([str(cpp_program()), str(path), "--info"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        names = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("output: ")]
        assert names == manifest.output_names


def test_cpp_program_errors_are_one_line_with_exit_codes(artifacts_root, tmp_path):
    exe = str(cpp_program())
    path, _ = _artifact("multitask", "aoti", artifacts_root)
    raw = tmp_path / "short.f32"
    raw.write_bytes(b"\0" * 16)
    cases = [
        ([exe, str(tmp_path / "missing.pt2"), str(raw)], 2, "does not exist"),
        ([exe, str(path), str(raw), "--shape", "1,3,64,64"], 2, "has 16 bytes"),
        ([exe, str(path), str(raw)], 2, "needs a --shape"),
        ([exe, str(path), str(raw), "--bogus"], 2, "unknown option --bogus"),
        ([exe, str(raw), str(raw)], 3, "cannot load"),
    ]
    for cmd, code, text in cases:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, (cmd, proc.stderr)
        assert text in proc.stderr
        assert proc.stderr.startswith("fxexport_infer: error: ")


def test_cpp_program_refuses_a_package_built_for_missing_cpu_features(artifacts_root, tmp_path):
    path, manifest = _artifact("multitask", "aoti", artifacts_root)
    x = tmp_path / "x.npy"
    np.save(x, example(1).numpy())
    # Pretend this CPU has only SSE (FXEXPORT_CPU_FLAGS replaces /proc/cpuinfo's flags).
    env = dict(os.environ, FXEXPORT_CPU_FLAGS="fpu sse sse2")
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    proc = subprocess.run([str(cpp_program()), str(path), str(x)], capture_output=True, text=True, env=env, timeout=300)
    if not str(isa) and not manifest.extra["cpu"]["flags"]:  # nothing recorded to refuse
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 3, proc.stderr
    assert "this CPU lacks" in proc.stderr and "export it again on this machine" in proc.stderr
    proc = subprocess.run([str(cpp_program()), str(path), str(x), "--no-cpu-check"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_build_is_cached_and_keyed_on_sources(tmp_path, monkeypatch):
    exe = cpp_program()
    mtime = exe.stat().st_mtime_ns
    from fxexport.cpp import build_cpp_example

    assert build_cpp_example(exe.parent) == exe
    assert exe.stat().st_mtime_ns == mtime  # not rebuilt: the cached binary was kept
    exe.chmod(0o644)  # a cached binary that lost its exec bit is fixed, not rebuilt
    assert build_cpp_example(exe.parent) == exe and os.access(exe, os.X_OK)
    assert exe.stat().st_mtime_ns == mtime
    # A changed source (or compiler / torch) gives another cache entry.
    import fxexport.cpp as cpp

    src = tmp_path / "cpp"
    shutil.copytree(cpp.source_dir(), src)
    with open(src / "fxexport_infer.cpp", "a") as fh:
        fh.write("\n// changed\n")
    monkeypatch.setattr(cpp, "source_dir", lambda: src)
    assert cached_binary_path(exe.parent) != exe
    cmd = compile_command("a.cpp", "a")
    assert "-std=c++20" in cmd and "-ltorch" in cmd and any(c.startswith("-Wl,-rpath,") for c in cmd)


def test_cpp_program_nested_outputs_round_trip_through_unflatten(tmp_path):
    """Tuple and dict heads (models/two_head.py) come out of C++ as det.0, det.1, seg.mask, seg.edge."""
    from _cpp_artifacts import REPO

    from fxexport import create_feature_extractor, export_torchscript, unflatten
    from fxexport.models import load_model, resolve_leaf_modules

    model = load_model(str(REPO / "models" / "two_head.py") + ":build")
    extractor = create_feature_extractor(model, {"backbone.2": "features", "det_head": "det", "seg_head": "seg"},
                                         leaf_modules=resolve_leaf_modules(model, ["DetHead", "SegHead"])).eval()
    # The heads are leaf modules returning a tuple / dict: script cannot index them, trace can.
    manifest = export_torchscript(extractor, example(2), tmp_path / "two_head.pt", method="trace")
    x = example(3, seed=4)
    got = run_cpp_example(tmp_path / "two_head.pt", x, tmp_path / "run", binary=cpp_program())
    assert list(got) == manifest.output_names == ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
    nested = unflatten(manifest, {k: torch.from_numpy(v) for k, v in got.items()})
    with torch.no_grad():
        ref = extractor(x)
    assert max_scaled_error(ref["features"], nested["features"]) <= 1e-5
    for r, g in zip(ref["det"], nested["det"]):
        assert max_scaled_error(r, g) <= 1e-5
    for key in ("mask", "edge"):
        assert max_scaled_error(ref["seg"][key], nested["seg"][key]) <= 1e-5


def test_cli_cpp_example_builds_and_runs(artifacts_root, capsys):
    from _cpp_artifacts import CACHE

    from fxexport.cli import main

    exe = cpp_program()
    assert main(["cpp-example", "--cache-dir", str(CACHE / "cpp")]) == 0
    assert capsys.readouterr().out.strip() == str(exe)
    path, manifest = _artifact("multitask", "torchscript", artifacts_root)
    assert main(["cpp-example", "--cache-dir", str(CACHE / "cpp"), "--run", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["binary"] == str(exe) and data["kind"] == "torchscript"
    assert [o["name"] for o in data["outputs"]] == manifest.output_names
    assert main(["cpp-example", "--cache-dir", str(CACHE / "cpp"), "--run", str(artifacts_root / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_example_takes_input_files_and_reports_what_the_program_wrote(artifacts_root, tmp_path):
    """fxexport.cpp.run_example (the path `fxexport cpp-example --run` takes): .npy inputs passed as files,
    outputs written to out_dir, stdout lines and outputs.json in one ProgramRun."""
    from fxexport.cpp import run_example

    path, manifest = _artifact("multitask", "torchscript", artifacts_root)
    x = example(2, seed=7)
    np.save(tmp_path / "x.npy", x.numpy())
    run = run_example(path, tmp_path / "x.npy", tmp_path / "out", binary=cpp_program(), threads=1)
    assert run.runtime == "libtorch" and run.listing["kind"] == "torchscript"
    assert run.output_names == manifest.output_names
    assert [line.split("\t")[0] for line in run.output_lines()] == manifest.output_names
    assert run.to_dict()["binary"] == str(cpp_program())
    ref = _eager_flat(multitask_extractor(), x)
    arrays = run.arrays()
    assert list(arrays) == list(ref)
    for name in ref:
        assert max_scaled_error(ref[name], torch.from_numpy(arrays[name])) <= TOLERANCE["torchscript"], name
    # no inputs: the first input set verify would make from the manifest (seeded, so the same twice)
    a = run_example(path, None, tmp_path / "r1", binary=cpp_program()).arrays()
    b = run_example(path, None, tmp_path / "r2", binary=cpp_program(), seed=0).arrays()
    assert all(np.array_equal(a[n], b[n]) for n in a)
    with pytest.raises(FxExportError, match="does not exist"):
        run_example(tmp_path / "missing.pt", tmp_path / "x.npy", tmp_path / "o", binary=cpp_program())

"""The OpenVINO C++ program (scripts/cpp/fxexport_openvino.cpp) runs fxexport's ONNX files and IRs by name.

resnet18 (layer2, layer4; dynamic batch) and the multi-task model from models/ (dynamic batch,
height and width) are exported with fxexport.export_onnx; the IRs are made from those files with
openvino.convert_model + save_model(compress_to_fp16=False) and an fxexport manifest in rt_info
as fxexport's OpenVINO format keeps it (fxexport/manifest, and the .bin's SHA-256 under
fxexport/bin_sha256; a top-level string "fxexport" is read too). The program,
built once against the C++ SDK inside the openvino wheel and cached in .cache/cpp (about 5 s of
CPU), runs each at another batch than the export's; every output is compared by name with the
eager extractor: max abs error <= 1e-4 times max(1, max|ref|).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from _cpp_artifacts import CACHE, MULTITASK_SPEC, example, max_scaled_error, multitask_extractor, resnet18_extractor

from fxexport.cpp import (
    build_openvino_example,
    cached_openvino_binary_path,
    openvino_compile_command,
    openvino_sdk,
    run_openvino_example,
)
from fxexport.errors import FxExportError
from fxexport.flatten import OutputSpec, flatten

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
    reason="no C++ compiler (apt-get install g++)",
)

TOLERANCE = 1e-4
ERROR_PREFIX = "fxexport_openvino: error: "


@pytest.fixture(scope="module")
def program():
    return build_openvino_example(CACHE / "cpp")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("cpp_openvino")


_made: dict[str, tuple] = {}


def _onnx(which: str, root):
    """(path, manifest) of export_onnx of "resnet18" or "multitask", made once per test process."""
    key = f"onnx-{which}"
    if key not in _made:
        from fxexport import export_onnx
        from fxexport.models import model_info

        path = root / f"{which}.onnx"
        if which == "resnet18":
            manifest = export_onnx(resnet18_extractor(), example(), path, dynamic=["batch"])
        else:
            manifest = export_onnx(multitask_extractor(), example(), path, dynamic=["batch", "height", "width"],
                                   model_info=model_info(MULTITASK_SPEC))
        _made[key] = (path, manifest)
    return _made[key]


def _ir(onnx_path, xml_path, manifest: dict | None, *, layout: str = "section", keep_framework: bool = False):
    """An IR converted from ``onnx_path`` carrying ``manifest`` in its rt_info.

    layout "section": as fxexport's OpenVINO format writes it, ``fxexport/manifest`` plus the
    .bin's SHA-256 under ``fxexport/bin_sha256``; "string": a top-level string ``fxexport``.
    """
    import hashlib

    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if not keep_framework:  # the ONNX manifest convert_model carries over under "framework"
        del model.get_rt_info()["framework"]
    placeholder = "sha256-placeholder-" + "0" * 45
    if manifest is not None and layout == "section":
        model.set_rt_info(json.dumps(manifest), ["fxexport", "manifest"])
        model.set_rt_info(placeholder, ["fxexport", "bin_sha256"])
    elif manifest is not None:
        model.set_rt_info(json.dumps(manifest), "fxexport")
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    if manifest is not None and layout == "section":
        sha = hashlib.sha256(xml_path.with_suffix(".bin").read_bytes()).hexdigest()
        xml_path.write_bytes(xml_path.read_bytes().replace(placeholder.encode(), sha.encode()))
    return xml_path


def _ir_manifest(manifest) -> dict:
    data = manifest.to_dict()
    data["format"] = "openvino"
    return data


def _artifact(which: str, kind: str, root):
    path, manifest = _onnx(which, root)
    if kind == "xml":
        key = f"xml-{which}"
        if key not in _made:
            _made[key] = _ir(path, root / f"{which}.xml", _ir_manifest(manifest))
        path = _made[key]
    return path, manifest


def _eager_flat(extractor, x) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = extractor(x)
    spec = OutputSpec.from_outputs(out)
    return dict(zip(spec.names, flatten(spec, out)))


def _run(program, *args, timeout=300):
    return subprocess.run([str(program), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _npy(path, x) -> str:
    np.save(path, x.numpy() if hasattr(x, "numpy") else x)
    return str(path)


@pytest.mark.parametrize("which", ["resnet18", "multitask"])
@pytest.mark.parametrize("kind", ["onnx", "xml"])
def test_openvino_program_matches_eager_by_name(which, kind, program, root, tmp_path):
    path, manifest = _artifact(which, kind, root)
    extractor = resnet18_extractor() if which == "resnet18" else multitask_extractor()
    # Another batch than the export example (2); the multi-task file is also dynamic in height/width.
    x = example(batch=3, height=48, width=80, seed=1) if which == "multitask" else example(3, seed=1)
    ref = _eager_flat(extractor, x)

    got = run_openvino_example(path, x, tmp_path, binary=program, threads=2)

    assert list(got) == manifest.output_names == list(ref)
    for name in ref:
        assert got[name].dtype == np.float32
        err = max_scaled_error(ref[name], torch.from_numpy(got[name]))
        assert err <= TOLERANCE, f"{kind} {which} output '{name}': scaled max abs error {err:.3g}"
    listing = json.loads((tmp_path / "outputs" / "outputs.json").read_text())
    assert listing["kind"] == ("openvino" if kind == "xml" else "onnx")
    # float32 artifact: f32 asked for and reported by the compiled model, whatever the CPU's bf16 / AMX support.
    assert listing["precision_hint"] == "f32" and listing["inference_precision"] == "f32"
    assert listing["threads"] == 2


def test_outputs_json_stdout_and_files_agree(program, root, tmp_path):
    path, manifest = _artifact("multitask", "onnx", root)
    x = example(batch=1, seed=2)
    proc = _run(program, path, _npy(tmp_path / "x.npy", x), "--out", tmp_path / "o", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert header == (f'artifact: {path} (onnx), 4 outputs, manifest from rt_info["framework"]["fxexport"] '
                      "(format onnx)")
    listing = json.loads((tmp_path / "o" / "outputs.json").read_text())
    assert [o["name"] for o in listing["outputs"]] == manifest.output_names
    assert [o["file"] for o in listing["outputs"]] == [f"{i}_{n}.npy" for i, n in enumerate(manifest.output_names)]
    assert listing["manifest_source"] == 'rt_info["framework"]["fxexport"]'
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


def test_manifest_is_read_from_rt_info_top_level_first(program, root, tmp_path):
    onnx_path, manifest = _artifact("resnet18", "onnx", root)
    # ONNX: metadata_props, which OpenVINO shows as rt_info["framework"]["fxexport"].
    proc = _run(program, onnx_path, "--info")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("manifest: "))[10:])
    assert printed == manifest.to_dict()
    assert [line[8:] for line in proc.stdout.splitlines() if line.startswith("output: ")] == manifest.output_names
    assert 'manifest from rt_info["framework"]["fxexport"] (format onnx)' in proc.stdout

    # An IR with its own manifest and the inherited ONNX one: the IR's own wins, in either layout.
    for layout, source in [("section", 'rt_info["fxexport"]["manifest"]'), ("string", 'rt_info["fxexport"]')]:
        both = _ir(onnx_path, tmp_path / f"both-{layout}.xml", _ir_manifest(manifest), layout=layout,
                   keep_framework=True)
        proc = _run(program, both, "--info")
        assert proc.returncode == 0, proc.stderr
        printed = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("manifest: "))[10:])
        assert printed["format"] == "openvino" and printed == _ir_manifest(manifest)
        assert f"manifest from {source} (format openvino)" in proc.stdout

    # An IR converted from the ONNX file without a manifest of its own: the inherited one is read.
    inherited = _ir(onnx_path, tmp_path / "inherited.xml", None, keep_framework=True)
    proc = _run(program, inherited, "--info")
    assert 'manifest from rt_info["framework"]["fxexport"] (format onnx)' in proc.stdout, proc.stdout


def test_outputs_follow_the_manifest_names_not_the_model_order(program, root, tmp_path):
    onnx_path, manifest = _artifact("resnet18", "onnx", root)
    data = _ir_manifest(manifest)
    data["outputs"] = data["outputs"][::-1]  # layer4, layer2
    xml = _ir(onnx_path, tmp_path / "reversed.xml", data)
    x = example(3, seed=5)
    got = run_openvino_example(xml, x, tmp_path / "run", binary=program, threads=2)
    assert list(got) == ["layer4", "layer2"]
    ref = _eager_flat(resnet18_extractor(), x)
    for name in ref:
        assert max_scaled_error(ref[name], torch.from_numpy(got[name])) <= TOLERANCE

    data["outputs"][0] = dict(data["outputs"][0], name="layer3")  # not an output of the model
    xml = _ir(onnx_path, tmp_path / "wrong.xml", data)
    proc = _run(program, xml, _npy(tmp_path / "x.npy", x))
    assert proc.returncode == 3
    assert proc.stderr == (f"{ERROR_PREFIX}'{xml}': the manifest's output 'layer3' is not an output of the model "
                           "(outputs: layer2, layer4)\n")


def test_an_ir_whose_bin_does_not_match_is_reported_not_run(program, root, tmp_path):
    xml, _ = _artifact("resnet18", "xml", root)
    mixed = tmp_path / "mixed.xml"
    shutil.copy(xml, mixed)
    data = bytearray(xml.with_suffix(".bin").read_bytes())
    data[100] ^= 1  # one flipped bit
    (tmp_path / "mixed.bin").write_bytes(bytes(data))
    proc = _run(program, mixed, _npy(tmp_path / "x.npy", example(1)), "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{ERROR_PREFIX}OpenVINO IR '{mixed}': weights 'mixed.bin' do not match the .xml")
    assert proc.stderr.count("\n") == 1 and "re-export both files" in proc.stderr
    assert "\tshape=" not in proc.stdout and not (tmp_path / "o").exists()
    shutil.copy(xml.with_suffix(".bin"), tmp_path / "mixed.bin")  # the matching .bin: runs
    assert _run(program, mixed, tmp_path / "x.npy").returncode == 0


def test_without_a_manifest_outputs_keep_their_tensor_names(program, root, tmp_path):
    onnx_path, manifest = _artifact("resnet18", "onnx", root)
    xml = _ir(onnx_path, tmp_path / "bare.xml", None)
    x = example(1, seed=6)
    proc = _run(program, xml, _npy(tmp_path / "x.npy", x), "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert "manifest (none)" in proc.stdout.splitlines()[0]
    listing = json.loads((tmp_path / "o" / "outputs.json").read_text())
    assert [o["name"] for o in listing["outputs"]] == manifest.output_names
    assert listing["manifest_source"] is None


def test_nested_outputs_round_trip_through_unflatten(program, tmp_path):
    """Tuple and dict heads (models/two_head.py) come out of OpenVINO as det.0, det.1, seg.mask, seg.edge."""
    from _cpp_artifacts import REPO

    from fxexport import create_feature_extractor, export_onnx, unflatten
    from fxexport.models import load_model, resolve_leaf_modules

    model = load_model(str(REPO / "models" / "two_head.py") + ":build")
    extractor = create_feature_extractor(model, {"backbone.2": "features", "det_head": "det", "seg_head": "seg"},
                                         leaf_modules=resolve_leaf_modules(model, ["DetHead", "SegHead"])).eval()
    manifest = export_onnx(extractor, example(2), tmp_path / "two_head.onnx", dynamic=["batch"])
    x = example(3, seed=4)
    got = run_openvino_example(tmp_path / "two_head.onnx", x, tmp_path / "run", binary=program)
    assert list(got) == manifest.output_names == ["features", "det.0", "det.1", "seg.mask", "seg.edge"]
    nested = unflatten(manifest, {k: torch.from_numpy(v) for k, v in got.items()})
    with torch.no_grad():
        ref = extractor(x)
    assert max_scaled_error(ref["features"], nested["features"]) <= TOLERANCE
    for r, g in zip(ref["det"], nested["det"]):
        assert max_scaled_error(r, g) <= TOLERANCE
    for key in ("mask", "edge"):
        assert max_scaled_error(ref["seg"][key], nested["seg"][key]) <= TOLERANCE


def test_inputs_are_cast_and_raw_inputs_take_a_shape(program, root, tmp_path):
    path, _ = _artifact("resnet18", "onnx", root)
    x = example(2, seed=7)
    ref = run_openvino_example(path, x, tmp_path / "f32", binary=program)
    got64 = run_openvino_example(path, x.double(), tmp_path / "f64", binary=program)  # cast to the model's f32
    raw = tmp_path / "x.f32"
    raw.write_bytes(x.numpy().astype("<f4").tobytes())
    proc = _run(program, path, raw, "--shape", "2,3,64,64", "--out", tmp_path / "raw")
    assert proc.returncode == 0, proc.stderr
    for name in ref:
        np.testing.assert_array_equal(got64[name], ref[name])
        np.testing.assert_array_equal(np.load(tmp_path / "raw" / f"{list(ref).index(name)}_{name}.npy"), ref[name])


def test_f32_hint_for_float32_artifacts_only(program, root, tmp_path):
    """INFERENCE_PRECISION_HINT=f32 unless the manifest says float16 / bfloat16 (as compile_config decides)."""
    onnx_path, manifest = _artifact("resnet18", "onnx", root)
    x = _npy(tmp_path / "x.npy", example(1))

    def hint(path, *args):
        proc = _run(program, path, x, "--out", tmp_path / "o", *args)
        assert proc.returncode == 0, proc.stderr
        listing = json.loads((tmp_path / "o" / "outputs.json").read_text())
        line = next(line for line in proc.stdout.splitlines() if line.startswith("runtime: "))
        assert f"(hint {listing['precision_hint'] or 'none'})" in line
        return listing["precision_hint"]

    assert hint(onnx_path) == "f32"
    assert hint(onnx_path, "--precision", "as-is") is None
    fp16 = dict(_ir_manifest(manifest), format="openvino-fp16")
    xml = _ir(onnx_path, tmp_path / "fp16.xml", fp16)
    assert hint(xml) is None
    assert hint(xml, "--precision", "f32") == "f32"
    bf16 = _ir_manifest(manifest)
    bf16["outputs"] = [dict(o, dtype="bfloat16") for o in bf16["outputs"]]
    assert hint(_ir(onnx_path, tmp_path / "bf16.xml", bf16)) is None


def test_bench_times_runs_after_warmup(program, root, tmp_path):
    path, _ = _artifact("resnet18", "onnx", root)
    x = _npy(tmp_path / "x.npy", example(1))
    proc = _run(program, path, x, "--bench", "4", "--warmup", "2", "--threads", "2", "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads((tmp_path / "b" / "outputs.json").read_text())
    assert len(listing["times_ms"]) == 4 and all(t > 0 for t in listing["times_ms"])
    assert listing["warmup"] == 3  # the run whose outputs are written, then --warmup 2
    assert listing["median_ms"] == pytest.approx(float(np.median(listing["times_ms"])))
    assert any(line.startswith("latency: median ") and "over 4 runs (3 warm-up)" in line
               for line in proc.stdout.splitlines())
    proc = _run(program, path, x, "--repeat", "2", "--out", tmp_path / "r")  # as in fxexport_infer
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "r" / "outputs.json").read_text())["times_ms"]) == 2


def test_errors_are_one_line_with_exit_codes(program, root, tmp_path):
    path, _ = _artifact("resnet18", "onnx", root)
    x = _npy(tmp_path / "x.npy", example(1))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x93NUMPY not a model")
    lonely = tmp_path / "lonely.xml"  # an IR without its .bin
    shutil.copy(_artifact("resnet18", "xml", root)[0], lonely)
    cases = [
        ([tmp_path / "missing.onnx", x], 2, "model '" + str(tmp_path / "missing.onnx") + "' does not exist"),
        ([tmp_path / "x.npy", x], 2, "is neither .onnx nor .xml"),
        ([lonely, x], 2, f"the IR's weights '{tmp_path / 'lonely.bin'}' do not exist"),
        ([path, tmp_path / "missing.npy"], 2, "cannot open input"),
        ([path, x, x], 2, "the model takes 1 input(s) (x), got 2"),
        ([path, _npy(tmp_path / "bad.npy", np.zeros((1, 4, 64, 64), "float32"))], 2, "has shape [1, 4, 64, 64]"),
        ([path, x, "--bogus"], 2, "unknown option --bogus"),
        ([path, x, "--precision", "fp8"], 2, "--precision 'fp8' is not one of f32, auto, as-is"),
        ([path, x, "--warmup", "3"], 2, "--warmup goes with --bench N"),
        ([garbage, x], 3, f"cannot load '{garbage}' as ONNX: "),
    ]
    for args, code, text in cases:
        proc = _run(program, *args)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.startswith(ERROR_PREFIX) and text in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line: no OpenVINO source locations, no log noise
        assert ".cpp:" not in proc.stderr
    with pytest.raises(FxExportError, match="does not exist"):
        run_openvino_example(tmp_path / "missing.onnx", example(1), tmp_path / "run", binary=program)


def test_build_is_cached_and_keyed_on_sources(program, tmp_path, monkeypatch):
    mtime = program.stat().st_mtime_ns
    assert build_openvino_example(program.parent) == program
    assert program.stat().st_mtime_ns == mtime
    program.chmod(0o644)  # a cached binary that lost its exec bit is fixed, not rebuilt
    assert build_openvino_example(program.parent) == program and os.access(program, os.X_OK)
    assert program.stat().st_mtime_ns == mtime
    import fxexport.cpp as cpp

    src = tmp_path / "cpp"
    shutil.copytree(cpp.source_dir(), src)
    with open(src / "fxexport_openvino.cpp", "a") as fh:
        fh.write("\n// changed\n")
    monkeypatch.setattr(cpp, "source_dir", lambda: src)
    assert cached_openvino_binary_path(program.parent) != program
    include, libs, library = openvino_sdk()
    cmd = openvino_compile_command("a.cpp", "a")
    assert cmd[1:] == ["-O2", "-std=c++17", "-I", str(include), "a.cpp", "-o", "a", "-L", str(libs), f"-l:{library}",
                       f"-Wl,-rpath,{libs}"]
    assert (libs / library).exists() and library.startswith("libopenvino.so.")


def test_cmake_builds_the_openvino_target_from_the_wheel(root, tmp_path):
    """scripts/cpp/CMakeLists.txt: find_package(OpenVINO) with the wheel's cmake folder, no torch."""
    import fxexport.cpp as cpp

    assert shutil.which("cmake"), "cmake is needed to check scripts/cpp/CMakeLists.txt"
    include, _, _ = openvino_sdk()
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(cpp.source_dir()), "-B", str(build), "-DFXEXPORT_WITH_TORCH=OFF",
                                f"-DOpenVINO_DIR={include.parent / 'cmake'}"], capture_output=True, text=True,
                               timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    made = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr
    assert not (build / "fxexport_infer").exists()
    path, manifest = _artifact("resnet18", "xml", root)
    proc = _run(build / "fxexport_openvino", path, "--info")
    assert proc.returncode == 0, proc.stderr
    assert [line[8:] for line in proc.stdout.splitlines() if line.startswith("output: ")] == manifest.output_names

"""Malformed artifacts are bad input, not crashes (issue 11).

The manifest reader takes untrusted JSON: broken or wrongly typed fields, oversized
manifests and newer format versions give one :class:`VerificationError` that names the
file and the field, and nothing else ever comes out (hypothesis fuzzes it). Every file
here is generated in ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import re
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxexport.errors import VerificationError
from fxexport.formats import read_manifest
from fxexport.formats.torchscript import TORCHSCRIPT_EXTRA_FILE
from fxexport.manifest import (
    FORMAT_VERSION,
    MANIFEST_KEY,
    MAX_MANIFEST_BYTES,
    Manifest,
    TensorSpec,
)

VALID = {
    "format": "onnx",
    "format_version": FORMAT_VERSION,
    "inputs": [{"name": "x", "shape": ["batch", 3, 8, 8], "dtype": "float32"}],
    "outputs": [{"name": "feat", "shape": ["batch", 4, 6, 6], "dtype": "float32"},
                {"name": "pair.0", "shape": ["batch", 2], "dtype": "int64"}],
    "nodes": {"conv": "feat", "pair": "pair"},
    "mode": "eval",
    "dynamic": ["batch"],
    "model": {"spec": "torchvision:resnet18", "kwargs": {"num_classes": 10}, "weights_sha256": None, "seed": 0},
    "exporter": "dynamo",
    "opset": 18,
    "versions": {"fxexport": "0.1.0", "torch": "2.5.0"},
    "extra": {
        "output_tree": {"type": "dict", "keys": ["feat", "pair"], "items": [
            {"type": "tensor", "name": "feat"}, {"type": "tuple", "items": [{"type": "tensor", "name": "pair.0"}]}]},
        "example_shapes": [[2, 3, 8, 8]],
        "cpu": {"machine": "x86_64", "inductor_isa": "AVX2", "flags": ["avx2", "fma"], "model_name": "test CPU"},
    },
}


def test_valid_manifest_round_trips():
    manifest = Manifest.from_dict(copy.deepcopy(VALID))
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.inputs[0] == TensorSpec("x", ["batch", 3, 8, 8], "float32")
    assert manifest.to_dict() == VALID


# ----------------------------------------------------------------------------- one bad field, one line


def _with(path: str, value):
    """VALID with the field at dotted ``path`` set to ``value`` (``...`` deletes it)."""
    data = copy.deepcopy(VALID)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    here = data
    for key in parents:
        here = here[key]
    if value is ...:
        del here[last]
    else:
        here[last] = value
    return data


BAD_FIELDS = [
    # (path, bad value, the field the message names)
    ("inputs", {"x": 1}, "'inputs' must be a list"),
    ("inputs", "x", "'inputs' must be a list"),
    ("inputs.0", ["x", [1]], "'inputs[0]' must be an object"),
    ("inputs.0.name", 7, "'inputs[0].name' must be a string"),
    ("inputs.0.name", ..., "'inputs[0].name' must be a string"),
    ("inputs.0.shape", "batch,3", "'inputs[0].shape' must be a list"),
    ("inputs.0.shape.2", 1.5, "'inputs[0].shape[2]' must be an integer >= 0 or a dim name"),
    ("inputs.0.shape.2", -1, "'inputs[0].shape[2]'"),
    ("inputs.0.shape.2", True, "'inputs[0].shape[2]'"),
    ("inputs.0.shape.2", None, "'inputs[0].shape[2]'"),
    ("inputs.0.shape.2", [8], "'inputs[0].shape[2]'"),
    ("outputs.1.dtype", "float33", "'outputs[1].dtype' must be a dtype name"),
    ("outputs.1.dtype", 5, "'outputs[1].dtype'"),
    ("outputs.1.name", "feat", "'outputs' names 'feat' more than once"),
    ("nodes", ["conv"], "'nodes' must be an object"),
    ("nodes.conv", 3, "'nodes['conv']' must be a string"),
    ("format_version", "1", "'format_version' must be an integer >= 1"),
    ("format_version", 1.0, "'format_version' must be an integer"),
    ("format_version", 0, "'format_version' must be an integer >= 1"),
    ("format_version", FORMAT_VERSION + 1, f"format_version {FORMAT_VERSION + 1} is newer than this fxexport reads"),
    ("format", ..., "'format' must be a non-empty string"),
    ("format", ["onnx"], "'format' must be a non-empty string"),
    ("mode", "test", "'mode' must be 'eval' or 'train'"),
    ("dynamic", "batch", "'dynamic' must be a list"),
    ("dynamic.0", 0, "'dynamic[0]' must be a string"),
    ("model", "torchvision:resnet18", "'model' must be an object"),
    ("model.spec", ["os:system"], "'model.spec' must be a string"),
    ("model.kwargs", [1], "'model.kwargs' must be an object"),
    ("model.seed", "0", "'model.seed' must be an integer"),
    ("model.leaf_modules", "Gate", "'model.leaf_modules' must be a list"),
    ("exporter", 1, "'exporter' must be a string"),
    ("opset", "18", "'opset' must be an integer"),
    ("versions.torch", 2.5, "'versions['torch']' must be a string"),
    ("extra", [], "'extra' must be an object"),
    ("extra.output_tree", {"type": "list", "items": []}, "'extra.output_tree.type' must be 'dict'"),
    ("extra.output_tree.items.1.type", "set", "'extra.output_tree.items[1].type'"),
    ("extra.output_tree.items.1.items", None, "'extra.output_tree.items[1].items' must be a list"),
    ("extra.output_tree.keys", ["feat"], "'extra.output_tree' has 1 keys for 2 items"),
    ("extra.example_shapes.0.1", "3", "'extra.example_shapes[0][1]'"),
    ("extra.cpu.flags", "avx2", "'extra.cpu.flags' must be a list"),
    ("extra.cpu.machine", 64, "'extra.cpu.machine' must be a string"),
]


@pytest.mark.parametrize("path, value, fragment", BAD_FIELDS, ids=[f"{p}={v!r}" for p, v, _ in BAD_FIELDS])
def test_each_bad_field_is_one_typed_line_naming_it(path, value, fragment):
    with pytest.raises(VerificationError) as info:
        Manifest.from_dict(_with(path, value))
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_not_an_object_and_not_json():
    for data in ([], "onnx", 3, None):
        with pytest.raises(VerificationError, match="manifest must be a JSON object"):
            Manifest.from_dict(data)
    for text in ("{not json", "", b"\xff\xfe{}", "[" * 100_000 + "]" * 100_000, '{"format": 1' + "0" * 5000 + "}"):
        with pytest.raises(VerificationError, match="manifest"):
            Manifest.from_json(text)
    with pytest.raises(VerificationError, match="at most 1048576 bytes"):
        Manifest.from_json(json.dumps(dict(VALID, extra={"pad": "x" * MAX_MANIFEST_BYTES})))


def test_deep_output_tree_is_refused_not_a_recursion_error():
    tree = {"type": "tensor", "name": "feat"}
    for _ in range(500):
        tree = {"type": "tuple", "items": [tree]}
    data = _with("extra.output_tree", {"type": "dict", "keys": ["feat"], "items": [tree]})
    with pytest.raises(VerificationError, match="nests deeper than 64 levels"):
        Manifest.from_dict(data)


# ----------------------------------------------------------------------------- fuzz

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
FIELDS = list(VALID) + ["name", "shape", "dtype", "type", "items", "keys", "spec", "kwargs", "cpu", "flags"]
# Dicts with manifest-like keys reach the field checks instead of failing on the first missing key.
MANIFEST_LIKE = st.recursive(
    JSON, lambda children: st.dictionaries(st.sampled_from(FIELDS), children, max_size=6), max_leaves=30)


def _assert_typed_or_ok(data) -> None:
    try:
        manifest = Manifest.from_dict(data)
    except VerificationError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert isinstance(manifest, Manifest)
    Manifest.from_json(manifest.to_json())  # what was accepted is a manifest that round-trips


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MANIFEST_LIKE)
def test_fuzz_random_json_shapes_only_raise_the_typed_error(data):
    _assert_typed_or_ok(data)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["replace", "delete", "wrap"]), JSON),
                min_size=1, max_size=4))
def test_fuzz_mutations_of_a_valid_manifest_only_raise_the_typed_error(mutations):
    data = copy.deepcopy(VALID)
    for path, how, value in mutations:
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
        if not isinstance(parent, (dict, list)):
            continue  # ... or replaced a container on it by a string
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = [current, value] if how == "wrap" else value
    _assert_typed_or_ok(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_fuzz_random_text_only_raises_the_typed_error(text):
    try:
        Manifest.from_json(text)
    except VerificationError:
        pass


# ----------------------------------------------------------------------------- read_manifest names the file


def _torchscript_zip(path: Path, manifest_text: str | bytes | None) -> Path:
    """A zip laid out like a TorchScript archive (data.pkl at its top folder), with a manifest entry."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02N.")
        zf.writestr("archive/version", "3\n")
        if manifest_text is not None:
            zf.writestr(f"archive/extra/{TORCHSCRIPT_EXTRA_FILE}", manifest_text)
    return path


def _aoti_zip(path: Path, manifest_text: str | None, *, metadata: bytes | None = None) -> Path:
    """A zip laid out like an AOTInductor package: metadata JSON beside a 'compiled' library."""
    meta = metadata if metadata is not None else json.dumps(
        {"AOTI_DEVICE_KEY": "cpu", **({MANIFEST_KEY: manifest_text} if manifest_text is not None else {})}).encode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/archive_format", "pt2")
        zf.writestr("pkg/data/aotinductor/model/cabc123.wrapper.so", b"\x7fELF" + bytes(256))
        zf.writestr("pkg/data/aotinductor/model/cabc123_metadata.json", meta)
    return path


def test_read_manifest_of_zips_names_the_file_and_the_field(tmp_path):
    bad_types = json.dumps(_with("inputs.0.shape", "batch,3"))
    cases = [
        (_torchscript_zip(tmp_path / "broken.pt", "{not json"), "': manifest is not valid JSON"),
        (_torchscript_zip(tmp_path / "types.pt", bad_types), "'inputs[0].shape' must be a list"),
        (_torchscript_zip(tmp_path / "latin1.pt", b"\xff\xfe"), "not UTF-8 text"),
        (_aoti_zip(tmp_path / "types.pt2", bad_types), "'inputs[0].shape' must be a list"),
        (_aoti_zip(tmp_path / "broken.pt2", "{not json"), "manifest is not valid JSON"),
        (_aoti_zip(tmp_path / "meta.pt2", None, metadata=b"{oops"), "broken package metadata file"),
        (_aoti_zip(tmp_path / "notstr.pt2", None, metadata=b'{"fxexport": {"format": "aoti"}}'),
         "must be a JSON string"),
    ]
    for path, fragment in cases:
        with pytest.raises(VerificationError) as info:
            read_manifest(path)
        message = str(info.value)
        assert message.startswith(f"artifact '{path}'") and fragment in message and "\n" not in message, message


def test_load_aoti_refuses_a_package_with_a_broken_manifest_before_loading_its_code(tmp_path, monkeypatch):
    from fxexport.formats.aoti import load_aoti

    loaded = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: loaded.append(a))
    for path, fragment in [(_aoti_zip(tmp_path / "broken.pt2", "{not json"), "manifest is not valid JSON"),
                           (_aoti_zip(tmp_path / "meta.pt2", None, metadata=b"{oops"), "broken package metadata"),
                           (_aoti_zip(tmp_path / "cpu.pt2", json.dumps(_with("extra.cpu", "avx2"))), "extra.cpu")]:
        with pytest.raises(VerificationError, match=re.escape(fragment)):
            load_aoti(path)
    assert loaded == []
    load_aoti(_aoti_zip(tmp_path / "plain.pt2", None))  # a package fxexport did not write: nothing to check
    assert len(loaded) == 1


def test_oversized_manifests_are_refused_in_every_container(tmp_path):
    big = json.dumps(dict(VALID, extra={"pad": "x" * MAX_MANIFEST_BYTES}))
    pte = tmp_path / "big.pte"
    pte.write_bytes(b"\x00" * 16)
    Path(str(pte) + ".json").write_text(big)
    for path in (_torchscript_zip(tmp_path / "big.pt", big), _aoti_zip(tmp_path / "big.pt2", big), pte):
        with pytest.raises(VerificationError, match="is at most 1048576 bytes"):
            read_manifest(path)


def test_unknown_suffix_lists_the_known_ones(tmp_path):
    path = tmp_path / "model.weird"
    path.write_bytes(b"\x00")
    with pytest.raises(VerificationError, match=r"unknown suffix '\.weird'; fxexport reads \.onnx, \.pt, \.ts, \.pt2"):
        read_manifest(path)


# ----------------------------------------------------------------------------- generated artifacts


def _onnx_model(manifest: dict | str | None, *, external: str | None = None, input_shape=("batch", 3)):
    """A tiny ONNX graph y = x + w (w: 3 floats, stored at ``external`` when given) with a manifest entry."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    if external is not None:
        onnx.external_data_helper.set_external_data(w, location=external)
        w.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(input_shape))], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if manifest is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = MANIFEST_KEY, manifest if isinstance(manifest, str) else json.dumps(manifest)
    return model


def _small_manifest(shape=("batch", 3)) -> dict:
    return {"format": "onnx", "format_version": FORMAT_VERSION, "dynamic": ["batch"],
            "inputs": [{"name": "x", "shape": list(shape), "dtype": "float32"}],
            "outputs": [{"name": "y", "shape": list(shape), "dtype": "float32"}], "nodes": {"add": "y"}}


def _save(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _make_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (generated file, a fragment of the one error line both inspect and verify print)."""
    import random

    rng = random.Random(0)
    cases: dict[str, tuple[Path, str]] = {}
    good = _save(_onnx_model(_small_manifest()), root / "good" / "good.onnx")
    blob = good.read_bytes()
    truncated = root / "truncated.onnx"
    truncated.write_bytes(blob[: len(blob) // 2])
    cases["truncated .onnx"] = (truncated, "is not a readable ONNX file")
    for suffix, fragment in ((".onnx", "is not a readable ONNX file"), (".pt", "is not a readable TorchScript archive"),
                             (".pt2", "is not a readable AOTInductor package"), (".xml", "random.xml"),
                             (".pte", "carries no fxexport manifest")):
        path = root / f"random{suffix}"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
        cases[f"random bytes {suffix}"] = (path, fragment)
    unknown = root / "random.weird"  # .xml is OpenVINO's now: a suffix no format reads
    unknown.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    cases["unknown suffix"] = (unknown, "unknown suffix '.weird'; fxexport reads .onnx, .pt")
    cases["zip, manifest not JSON (.pt)"] = (_torchscript_zip(root / "broken.pt", "{not json"),
                                             "broken.pt': manifest is not valid JSON")
    cases["zip, manifest of wrong types (.pt2)"] = (
        _aoti_zip(root / "types.pt2", json.dumps(_with("inputs.0.shape.1", 2.5))),
        "manifest field 'inputs[0].shape[1]' must be an integer >= 0 or a dim name")
    cases["onnx, manifest of wrong types"] = (
        _save(_onnx_model(dict(_small_manifest(), nodes=["add"])), root / "types.onnx"),
        "manifest field 'nodes' must be an object")
    cases["manifest over 1 MiB"] = (
        _save(_onnx_model(dict(_small_manifest(), extra={"pad": "x" * MAX_MANIFEST_BYTES})), root / "big.onnx"),
        "a manifest is at most 1048576 bytes (1 MiB), so it is refused unread")
    cases["newer format_version"] = (_save(_onnx_model(dict(_small_manifest(), format_version=99)), root / "v99.onnx"),
                                     "manifest format_version 99 is newer than this fxexport reads")
    secret = root / "secret.bin"
    secret.write_bytes(bytes(12))
    cases["external data at ../"] = (_save(_onnx_model(_small_manifest(), external="../secret.bin"),
                                           root / "art" / "up.onnx"),
                                     "is refused: initializer 'w' stores its data at '../secret.bin', outside")
    cases["external data at an absolute path"] = (
        _save(_onnx_model(_small_manifest(), external=str(secret)), root / "art" / "abs.onnx"),
        "outside the artifact's folder; external data must be a relative path inside that folder")
    (root / "art" / "link.bin").symlink_to(secret)
    linked = _save(_onnx_model(_small_manifest(), external="link.bin"), root / "art" / "link.onnx")
    cases["external data through a symlink"] = (linked, "stores its data at 'link.bin' (a link to")
    return cases


CASE_NAMES = ["truncated .onnx", "random bytes .onnx", "random bytes .pt", "random bytes .pt2", "random bytes .xml",
              "random bytes .pte", "unknown suffix", "zip, manifest not JSON (.pt)",
              "zip, manifest of wrong types (.pt2)", "onnx, manifest of wrong types", "manifest over 1 MiB",
              "newer format_version", "external data at ../", "external data at an absolute path",
              "external data through a symlink"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _make_cases(tmp_path_factory.mktemp("malformed"))


def _one_error_line(capsys, code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.out, captured.err)
    assert len(lines) == 1 and lines[0].startswith("fxexport: error: "), captured.err
    assert "Traceback" not in captured.err and "--debug" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_malformed_file_is_one_line_and_exit_2(cases, case, command, capsys):
    from fxexport.cli import main

    path, fragment = cases[case]
    line = _one_error_line(capsys, main([command, str(path)]))
    assert fragment in line and str(path) in line, line


def test_the_cases_cover_the_issue_list(cases):
    assert sorted(cases) == sorted(CASE_NAMES)


def test_external_data_inside_the_folder_is_fine_and_counted(tmp_path, capsys):
    from fxexport.cli import main
    from fxexport.formats import describe_artifact

    path = _save(_onnx_model(_small_manifest(), external="weights.bin"), tmp_path / "ok.onnx")
    (tmp_path / "weights.bin").write_bytes(bytes(range(12)))
    assert read_manifest(path).input_names == ["x"]
    info = describe_artifact(path)
    assert info["error"] is None and info["facts"]["external_data"] == "weights.bin"
    assert info["facts"]["external_data_bytes"] == 12 and info["size_bytes"] == path.stat().st_size + 12
    assert main(["inspect", str(path)]) == 0
    assert "weights.bin" in capsys.readouterr().out


def test_onnx_runner_refuses_outside_data_before_onnxruntime_opens_it(cases, monkeypatch):
    import onnxruntime

    from fxexport.formats import open_session

    opened = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a) or pytest.fail("opened"))
    path, _ = cases["external data at ../"]
    with pytest.raises(VerificationError, match="is refused"):
        open_session(path, Manifest.from_dict(_small_manifest()))
    assert opened == []


# ----------------------------------------------------------------------------- shapes that would allocate too much


def test_verify_refuses_shapes_far_beyond_the_artifact_before_building_anything(tmp_path, capsys, monkeypatch):
    import torch

    from fxexport.cli import main

    path = _save(_onnx_model(_small_manifest(shape=(100000, 100000, 3)), input_shape=(100000, 100000, 3)),
                 tmp_path / "huge.onnx")
    assert path.stat().st_size < 2048
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("allocated"))
    line = _one_error_line(capsys, main(["verify", str(path)]))
    assert "random inputs for this manifest would take 335.3 GB" in line, line
    assert "input 'x' is float32 [100000, 100000, 3], 111.8 GB" in line
    assert "over the 256.0 MB limit" in line and "pass inputs= (your own tensors)" in line
    # inspect only reads: the shape is shown, nothing is allocated
    assert main(["inspect", str(path)]) == 0
    assert "100000" in capsys.readouterr().out


def test_random_input_limit_says_which_sizes_to_pass():
    from fxexport.verification.inputs import make_inputs, plan_inputs

    spec = [{"name": "x", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}]
    m = Manifest.from_dict({"format": "onnx", "inputs": spec, "outputs": [],
                            "extra": {"example_shapes": [[2, 3, 60000, 60000]]}})
    with pytest.raises(VerificationError) as info:
        plan_inputs(m)
    message = str(info.value)
    assert "now batch=[1, 3], height=[60000, 60032], width=[60000, 60032]" in message, message
    assert "e.g. sizes={'batch': [1], 'height': [1], 'width': [1]}" in message
    shapes = [[list(t.shape) for t in s] for s in make_inputs(m, sizes={"batch": [1], "height": [4], "width": [4]})]
    assert shapes == [[[1, 3, 4, 4]]] * 3
    # the limit follows the artifact's size (64x), never below 256 MiB
    assert plan_inputs(m, sizes={"height": [8]}, max_bytes=None)[1] == [[3, 3, 8, 60032]]
    with pytest.raises(VerificationError, match="over the 1.0 KB limit"):
        make_inputs(m, sizes={"height": [8], "width": [8]}, max_bytes=1024)
    static = Manifest.from_dict({"format": "onnx", "inputs": [{"name": "x", "shape": ["batch", 10**6, 10**6]}]})
    with pytest.raises(VerificationError, match=r"pass inputs= \(your own tensors\) \(its static dims alone"):
        plan_inputs(static)


def test_input_budget_counts_external_data(tmp_path):
    from fxexport.verification.inputs import MAX_RANDOM_INPUT_BYTES, input_budget

    path = _save(_onnx_model(_small_manifest(), external="weights.bin"), tmp_path / "ok.onnx")
    with open(tmp_path / "weights.bin", "wb") as f:
        f.truncate(8 << 20)  # sparse: 8 MiB of weights
    assert input_budget([path]) == 64 * (path.stat().st_size + (8 << 20))
    assert input_budget([tmp_path / "missing.onnx"]) == MAX_RANDOM_INPUT_BYTES


# ----------------------------------------------------------------------------- inspect never loads anything


@pytest.fixture
def nothing_loads(monkeypatch):
    """Make every way of loading code fail loudly, and record any attempt."""
    import ctypes

    import onnxruntime
    import torch

    attempts: list[str] = []

    def refuse(name):
        def call(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"inspect called {name}")
        return call

    monkeypatch.setattr(torch.jit, "load", refuse("torch.jit.load"))
    monkeypatch.setattr(torch._inductor, "aoti_load_package", refuse("torch._inductor.aoti_load_package"),
                        raising=False)
    monkeypatch.setattr(ctypes, "CDLL", refuse("ctypes.CDLL"))
    monkeypatch.setattr(torch.ops, "load_library", refuse("torch.ops.load_library"))
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse("onnxruntime.InferenceSession"))
    return attempts


def test_inspect_reads_torchscript_from_the_zip_without_loading_it(tmp_path, nothing_loads, capsys):
    import torch

    from fxexport.cli import main
    from fxexport.formats import describe_artifact

    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor, scale: float):
            return x * scale, x.sum(1)

    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(Pair()), str(plain))  # no manifest: what the archive itself says
    info = describe_artifact(plain)
    assert info["format"] == "torchscript" and "carries no fxexport manifest" in info["error"]
    assert info["facts"]["forward"] == "Pair.forward(x: Tensor, scale: float) -> Tuple[Tensor, Tensor]"
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == [("x", "Tensor"), ("scale", "float")]
    assert [o["dtype"] for o in info["outputs"]] == ["Tensor", "Tensor"]
    assert info["facts"]["code_files"] >= 1 and info["facts"]["archive_files"] > 3

    manifest = Manifest.from_dict(_small_manifest())
    with_manifest = tmp_path / "with.pt"
    torch.jit.save(torch.jit.script(Pair()), str(with_manifest),
                   _extra_files={TORCHSCRIPT_EXTRA_FILE: manifest.to_json()})
    assert main(["inspect", str(with_manifest)]) == 0
    out = capsys.readouterr().out
    assert "Pair.forward(x: Tensor, scale: float)" in out and "[batch, 3]" in out
    assert nothing_loads == []


def test_inspect_reads_an_aoti_package_without_loading_its_library(tmp_path, nothing_loads, capsys):
    from fxexport.cli import main
    from fxexport.formats import describe_artifact
    from fxexport.formats.aoti import cpu_features

    here = cpu_features()
    data = dict(_small_manifest(), format="aoti", exporter="aoti", extra={"cpu": here})
    path = _aoti_zip(tmp_path / "model.pt2", json.dumps(data))
    info = describe_artifact(path)
    assert info["error"] is None and info["format"] == "aoti" and info["inputs"][0]["name"] == "x"
    facts = info["facts"]
    assert facts["compiled_for"].startswith(f"{here['machine']}, {here['inductor_isa']}")
    assert facts["runs_here"] == "yes" and facts["shared_libraries"] == "cabc123.wrapper.so (260 bytes)"
    assert facts.get("cpu_flags", "") == " ".join(here["flags"])

    other = dict(data, extra={"cpu": dict(here, machine="riscv128", model_name="Imaginary CPU")})
    elsewhere = _aoti_zip(tmp_path / "elsewhere.pt2", json.dumps(other))
    assert main(["inspect", str(elsewhere)]) == 0
    out = capsys.readouterr().out
    assert "riscv128" in out and "Imaginary CPU" in out and "no: this machine lacks machine=riscv128" in out
    assert nothing_loads == []


def test_inspect_of_an_onnx_file_opens_no_runtime(cases, nothing_loads, capsys):
    from fxexport.cli import main

    good = next(iter(cases.values()))[0].parent / "good" / "good.onnx"
    assert main(["inspect", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"][0]["shape"] == ["batch", 3] and data["facts"]["nodes"] == 1
    assert nothing_loads == []

"""Malformed artifacts are bad input, not crashes (issue 11).

The manifest reader takes untrusted JSON: broken or wrongly typed fields, oversized
manifests and newer format versions give one :class:`VerificationError` that names the
file and the field, and nothing else ever comes out (hypothesis fuzzes it). Every file
here is generated in ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxexport.errors import VerificationError
from fxexport.manifest import (
    FORMAT_VERSION,
    MANIFEST_KEY,
    MAX_MANIFEST_BYTES,
    TORCHSCRIPT_EXTRA_FILE,
    Manifest,
    TensorSpec,
    read_manifest,
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
        (_torchscript_zip(tmp_path / "broken.pt", "{not json"), "has a malformed fxexport manifest: manifest is not"),
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

"""fxexport.export_aoti: AOTInductor packages with the flat outputs and the manifest in their metadata."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from _cpp_artifacts import (
    aoti_package,
    example,
    export_multitask_aoti,
    max_scaled_error,
    multitask_extractor,
    resnet18_extractor,
)
from torch import nn

from fxexport import read_manifest
from fxexport.errors import ExportError, InvalidInputError, OutputSpecError, VerificationError
from fxexport.formats.aoti import cpu_features, export_aoti, load_aoti, missing_cpu_features
from fxexport.flatten import OutputSpec, flatten


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "cpp_artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _flat(extractor, x):
    with torch.no_grad():
        out = extractor(x)
    return flatten(OutputSpec.from_outputs(out), out)


def test_manifest_travels_in_package_metadata(artifacts_root):
    path, manifest = aoti_package("multitask", artifacts_root)
    assert manifest.format == "aoti" and manifest.exporter == "aoti"
    assert manifest.output_names == ["features", "logits", "seg", "depth"]
    assert manifest.nodes == {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                              "depth_head.sigmoid": "depth"}
    assert manifest.dynamic == ["batch", "height", "width"]
    assert manifest.inputs[0].name == "x" and manifest.inputs[0].shape == ["batch", 3, "height", "width"]
    assert manifest.outputs[2].shape == ["batch", 5, "height", "width"]
    assert manifest.model["spec"].endswith("multitask.py:build")
    # CPU features of the building machine are recorded (the package is compiled for them).
    cpu = manifest.extra["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["machine"] and isinstance(cpu["flags"], list) and cpu["inductor_isa"]
    # Read back without loading the compiled code, and through the AOTInductor loader.
    assert read_manifest(path) == manifest
    assert json.loads(load_aoti(path).get_metadata()["fxexport"]) == manifest.to_dict()
    with zipfile.ZipFile(path) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
    assert top == {"multitask"}  # named after the file, not the temporary one


@pytest.mark.parametrize("which", ["resnet18", "multitask"])
def test_python_loader_matches_eager_at_other_sizes(which, artifacts_root):
    path, manifest = aoti_package(which, artifacts_root)
    extractor = resnet18_extractor() if which == "resnet18" else multitask_extractor()
    package = load_aoti(path)
    sizes = [(1, 64, 64), (3, 64, 64)] + ([(2, 96, 48)] if which == "multitask" else [])
    for b, h, w in sizes:
        x = example(b, h, w, seed=3)
        got = package(x)
        ref = _flat(extractor, x)
        assert len(got) == len(ref) == len(manifest.output_names)
        for name, r, g in zip(manifest.output_names, ref, got):
            assert max_scaled_error(r, g) <= 1e-4, (which, name, (b, h, w))


def test_verify_checks_pt2_against_the_rebuilt_extractor(artifacts_root):
    from fxexport.verification import verify

    path, manifest = aoti_package("resnet18", artifacts_root)
    report = verify(path)  # the reference is rebuilt from the manifest's model spec and nodes
    assert report.ok, report.summary()
    assert {c.runtime for c in report.checks} == {"aoti"}
    assert {c.name for c in report.checks} == set(manifest.output_names)


def test_reexport_is_byte_identical(artifacts_root):
    path, manifest = aoti_package("multitask", artifacts_root)
    first = path.read_bytes()
    assert export_multitask_aoti(path) == manifest
    assert path.read_bytes() == first


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"feat": y, "pair": (y.relu(), y.sigmoid())}


class _FixedSize(nn.Module):
    def forward(self, x):
        return {"flat": x.reshape(x.shape[0], 3 * 16 * 16)}


class _NotATensor(nn.Module):
    def forward(self, x):
        return {"feat": x, "count": 3}


def test_bad_arguments_leave_no_file(tmp_path):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(InvalidInputError, match=r"must end in \.pt2"):
        export_aoti(_Tiny().eval(), x, tmp_path / "m.zip")
    with pytest.raises(InvalidInputError, match="'depth'"):
        export_aoti(_Tiny().eval(), x, tmp_path / "m.pt2", dynamic=["depth"])
    with pytest.raises(OutputSpecError, match="'count'"):
        export_aoti(_NotATensor().eval(), x, tmp_path / "m.pt2")
    with pytest.raises(ExportError, match="height"):
        export_aoti(_FixedSize().eval(), x, tmp_path / "m.pt2", dynamic=["batch", "height"])
    assert list(tmp_path.iterdir()) == []


def test_failed_compile_keeps_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "m.pt2"
    target.write_bytes(b"previous")

    def boom(*args, **kwargs):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", boom)
    with pytest.raises(ExportError, match="compiler exploded"):
        export_aoti(_Tiny().eval(), torch.rand(1, 3, 16, 16), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]


def test_cpu_features_shape():
    cpu = cpu_features()
    assert set(cpu) == {"capability", "inductor_isa", "flags", "machine", "model_name", "system"}
    assert all(isinstance(f, str) for f in cpu["flags"])
    assert missing_cpu_features(cpu) == []  # this machine runs what it compiles


def test_loading_refuses_a_package_for_missing_cpu_features(artifacts_root, monkeypatch):
    import fxexport.formats.aoti as aoti

    path, manifest = aoti_package("multitask", artifacts_root)
    cpu = dict(manifest.extra["cpu"], inductor_isa="AVX512 AVX512_VNNI", flags=["avx2", "fma", "vaes"])
    monkeypatch.setattr(aoti, "_machine_flags", lambda: {"fpu", "sse", "sse2", "avx", "avx2", "fma"})
    # The ISA's flags and (-march=native) every flag the building machine had.
    assert missing_cpu_features(cpu) == ["avx512_vnni", "avx512bw", "avx512dq", "avx512f", "avx512vl", "vaes"]
    assert missing_cpu_features(dict(cpu, machine="aarch64")) == ["machine=aarch64"]
    if missing_cpu_features(manifest.extra["cpu"]):
        with pytest.raises(VerificationError, match="this machine lacks .* export it again on this machine"):
            load_aoti(path)

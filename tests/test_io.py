"""Atomic writes: all or nothing, never clobbering an existing file on failure."""

import os
import stat

import pytest

from fxexport._io import atomic_path


def test_success_renames_into_place_with_a_normal_file_mode(tmp_path):
    target = tmp_path / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx"
        tmp.write_bytes(b"abc")
    assert target.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_failure_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("exporter crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_torchscript_manifest_is_read_without_loading_the_module(tmp_path, monkeypatch):
    import torch

    from fxexport.formats import read_manifest
    from fxexport.manifest import Manifest, TensorSpec

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    manifest = Manifest(format="torchscript", inputs=[TensorSpec("x", [1, 2])], outputs=[TensorSpec("y", [1, 2])])
    path = tmp_path / "double.pt"
    torch.jit.save(torch.jit.script(Double()), str(path), _extra_files={"fxexport/manifest.json": manifest.to_json()})
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("read_manifest loaded the module"))
    assert read_manifest(str(path)) == manifest

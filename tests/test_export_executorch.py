"""fxexport.formats.executorch: torch.export -> XNNPACK -> .pte, manifest beside it, run in ExecuTorch's runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch", reason="ExecuTorch is the optional 'edge' extra")

from fxexport import create_feature_extractor, read_manifest, verify  # noqa: E402
from fxexport.errors import ExportError, InvalidInputError  # noqa: E402
from fxexport.formats.executorch import export_executorch, load_executorch, sidecar_path  # noqa: E402
from fxexport.models import load_model, model_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MULTITASK_SPEC = str(REPO / "models" / "multitask.py") + ":build"
MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}


def _x(batch: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _scaled_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float((ref - out).abs().max()) / max(1.0, float(ref.abs().max()))


@pytest.fixture(scope="module")
def multitask_pte(tmp_path_factory):
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    path = tmp_path_factory.mktemp("et") / "mt.pte"
    manifest = export_executorch(extractor, _x(), path, model_info=model_info(MULTITASK_SPEC))
    return path, manifest, extractor


def test_program_and_manifest_beside_it(multitask_pte):
    path, manifest, _ = multitask_pte
    assert path.is_file() and sidecar_path(path) == Path(str(path) + ".json") and sidecar_path(path).is_file()
    assert read_manifest(path) == manifest
    assert json.loads(sidecar_path(path).read_text()) == manifest.to_dict()
    assert manifest.format == "executorch" and manifest.exporter == "executorch"
    assert manifest.extra["backend"] == "xnnpack" and manifest.versions["executorch"]
    assert manifest.extra["delegated_ops"] is None or manifest.extra["delegated_ops"] > 0
    assert manifest.output_names == ["features", "logits", "seg", "depth"]
    assert manifest.nodes == MULTITASK_NODES
    assert manifest.inputs[0].name == "x" and manifest.inputs[0].shape == [1, 3, 64, 64]
    assert manifest.outputs[2].shape == [1, 5, 64, 64] and manifest.dynamic == []
    assert manifest.model["spec"].endswith("multitask.py:build")


def test_runs_in_executorch_runtime_like_eager(multitask_pte):
    path, manifest, extractor = multitask_pte
    method = load_executorch(path)
    x = _x(seed=7)
    out = method.execute([x])
    with torch.no_grad():
        ref = list(extractor(x).values())
    assert len(out) == len(ref) == 4
    for name, r, o in zip(manifest.output_names, ref, out):
        assert tuple(o.shape) == tuple(r.shape), name
        assert _scaled_error(r, o) < 1e-4, name


def test_verify_runs_pte_through_executorch(multitask_pte):
    path, _, extractor = multitask_pte
    report = verify(path, extractor)
    assert report.ok, report.render()
    assert {a["runtime"] for a in report.artifacts} == {"executorch"}
    # and from the manifest alone (model spec + node map); the spec names a Python file, which verify
    # imports only when told the artifact is trusted (this test wrote it)
    assert verify(path, trust_model_spec=True).ok


def test_bad_suffix_and_failed_export_leave_no_file(tmp_path):
    extractor = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    with pytest.raises(InvalidInputError, match="must end in .pte"):
        export_executorch(extractor, _x(), tmp_path / "m.onnx")
    target = tmp_path / "m.pte"
    target.write_bytes(b"old")
    with pytest.raises((InvalidInputError, ExportError)):
        export_executorch(extractor, torch.randn(1, 5, 64, 64), target)  # wrong channel count
    assert target.read_bytes() == b"old" and not sidecar_path(target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pte"]


@pytest.mark.slow
def test_resnet18_two_outputs(tmp_path):
    extractor = create_feature_extractor(load_model("torchvision:resnet18"), {"layer3": "c4", "layer4": "c5"}).eval()
    path = tmp_path / "r18.pte"
    manifest = export_executorch(extractor, _x(1, 224), path)
    assert manifest.output_names == ["c4", "c5"]
    x = _x(1, 224, seed=3)
    out = load_executorch(path).execute([x])
    with torch.no_grad():
        ref = list(extractor(x).values())
    for r, o in zip(ref, out):
        assert float((r - o).abs().max()) < 1e-4


@pytest.mark.slow
def test_cli_export_executorch(tmp_path):
    from fxexport.cli import main

    path = tmp_path / "mt.pte"
    code = main(["export", MULTITASK_SPEC, "--node", "trunk.stage3=features", "--node", "cls_head.fc=logits",
                 "--input-shape", "1,3,64,64", "--executorch", str(path), "--verify", "--quiet"])
    assert code == 0 and read_manifest(path).output_names == ["features", "logits"]
    assert main(["verify", str(path), "--quiet"]) == 0
    assert main(["export", MULTITASK_SPEC, "--node", "cls_head.fc", "--executorch", str(tmp_path / "b.pte"),
                 "--dynamic", "batch"]) == 2

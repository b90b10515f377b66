"""Issue 16 through the real entry point (``python -m fxexport`` and ``fxexport.cli.main``): real images and
their preprocessing record, several inputs on the command line, optional None arguments, the verify
progress bar, ``inspect`` of a .pt2's CPU features, and tables that stay whole when stdout is not a terminal.

Models are small and seeded (``timm:test_resnet``, ``models/rgbd.py``, a model file written here); images are
built here from seeded tensors; nothing downloads.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import encode_png

from fxexport.cli import main
from fxexport.formats import read_manifest
from fxexport.manifest import MANIFEST_KEY, Manifest

ROOT = Path(__file__).resolve().parents[1]
RGBD = str(ROOT / "models" / "rgbd.py") + ":build"
TIMM = "timm:test_resnet"
TIMM_NODES = ["--node", "layer1=f1", "--node", "layer4=f4"]


def fx(*args: str, columns: int = 80, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m fxexport ARGS`` with stdout captured (not a terminal) at ``columns`` columns."""
    full = dict(os.environ, COLUMNS=str(columns), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "fxexport", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def _png(path: Path, h: int, w: int, seed: int) -> Path:
    image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    path.write_bytes(encode_png(image).numpy().tobytes())
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Five images of different sizes: PNGs, a JPEG with an EXIF orientation tag and an RGBA PNG."""
    root = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate([(70, 90), (80, 64), (64, 100)]):
        _png(root / f"{i}.png", h, w, seed=i)
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (60, 96, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / "3_rotated.jpg", format="JPEG", exif=exif.tobytes())
    rgba = rng.integers(0, 256, (72, 72, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "4_alpha.png")
    return root


@pytest.fixture(scope="module")
def timm_onnx(tmp_path_factory) -> Path:
    """timm's test_resnet exported through python -m fxexport with no preprocessing flag (dynamic batch, H, W:
    the spec's default is recorded as timm gives it, 160x160)."""
    path = tmp_path_factory.mktemp("timm") / "tr.onnx"
    proc = fx("export", TIMM, "--input-shape", "1,3,64,64", "--dynamic", "batch,height,width", *TIMM_NODES,
              "--onnx", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return path


# --------------------------------------------------------------------------- the record in the manifest


def test_export_records_the_spec_default_and_inspect_shows_it(timm_onnx, capsys, monkeypatch):
    entry = read_manifest(timm_onnx).preprocess
    assert entry.source == "spec default" and entry.input == "x" and entry.flags == ()
    # timm's pretrained_cfg: input 160, crop_pct 0.95, mean/std 0.5 (the export's H and W are dynamic: not fitted)
    assert entry.record.crop == (160, 160) and entry.record.crop_pct == 0.95 and entry.record.mean == (0.5, 0.5, 0.5)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["inspect", str(timm_onnx)]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("preprocess"))
    assert "center crop 160x160" in line and "mean (0.5, 0.5, 0.5)" in line and "spec default" in line
    assert "…" not in out


def test_export_flags_win_over_the_spec_default(tmp_path, capsys):
    path = tmp_path / "flagged.onnx"
    assert main(["export", TIMM, "--input-shape", "1,3,64,64", *TIMM_NODES, "--onnx", str(path), "--quiet",
                 "--resize", "72", "--mean", "0.4,0.4,0.4", "--std", "0.2,0.25,0.3", "--channel-order", "BGR"]) == 0
    entry = read_manifest(path).preprocess
    assert entry.source == "flag" and entry.base == "spec default"
    assert entry.flags == ("resize", "mean", "std", "channel_order")
    record = entry.record
    # the crop is the spec default's, fitted to the static 64x64 input
    assert record.resize == 72 and record.crop_pct is None and record.crop == (64, 64)
    assert record.mean == (0.4, 0.4, 0.4) and record.std == (0.2, 0.25, 0.3) and record.channel_order == "BGR"
    capsys.readouterr()
    assert main(["export", TIMM, *TIMM_NODES, "--onnx", str(tmp_path / "bad.onnx"), "--std", "1,0,1"]) == 2
    assert capsys.readouterr().err.strip() == ("fxexport: error: --std must be three finite numbers > 0, got "
                                               "(1.0, 0.0, 1.0)")
    assert not (tmp_path / "bad.onnx").exists()


def test_verify_images_flag_over_manifest_over_spec_default(timm_onnx, images, tmp_path, capsys):
    # the manifest's record (spec default at export): every image becomes 1x3x160x160
    assert main(["verify", str(timm_onnx), "--inputs", str(images), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["inputs"] == [[[1, 3, 160, 160]]] * 5
    assert any("center crop 160x160" in n and "from the artifact's manifest" in n for n in report["notes"])
    # a flag wins over the manifest, field by field
    assert main(["verify", str(timm_onnx), "--inputs", str(images), "--crop", "48", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["inputs"] == [[[1, 3, 48, 48]]] * 5
    assert any("center crop 48x48" in n and "from flags: crop, the rest from the manifest" in n
               for n in report["notes"])
    # an old (version 1) manifest without a record: the spec's default
    old = _as_version_1(timm_onnx, tmp_path / "v1.onnx")
    assert read_manifest(old).format_version == 1
    assert main(["inspect", str(old)]) == 0
    assert "preprocess" not in capsys.readouterr().out
    assert main(["verify", str(old), "--inputs", str(images), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["inputs"] == [[[1, 3, 160, 160]]] * 5
    assert any("(for input 'x'; spec default)" in n for n in report["notes"])
    assert main(["verify", str(timm_onnx), "--resize", "64"]) == 2
    assert "apply to the images of --inputs DIR" in capsys.readouterr().err


def _as_version_1(src: Path, dst: Path) -> Path:
    """``src`` with its manifest rewritten as fxexport 0.1 wrote it: format_version 1, no preprocess record."""
    import onnx

    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == MANIFEST_KEY:
            data = json.loads(prop.value)
            data.pop("preprocess", None)
            data.pop("concrete_args", None)
            data["format_version"] = 1
            prop.value = json.dumps(data)
    onnx.save(model, str(dst))
    return dst


def test_optimize_calibrates_onnxruntime_and_openvino_int8_on_images(timm_onnx, images, tmp_path, capsys):
    code = main(["optimize", str(timm_onnx), "--int8", "static", "--calibration", str(images), "--inputs", str(images),
                 "--backend", "onnxruntime", "--backend", "openvino", "--no-timing", "-o", str(tmp_path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["summary"]
    by_name = {v["name"]: v for v in report["variants"]}
    for name in ("int8-static", "openvino:int8-static"):
        calibration = by_name[name]["settings"]["quantization"]["calibration"]
        assert calibration["source"] == "folder" and calibration["count"] == 5
        assert calibration["preprocess"]["source"] == "manifest"
        assert calibration["preprocess"]["record"]["crop"] == [160, 160]
        assert by_name[name]["verdict"] in ("ok", "slower")
    assert report["inputs"] == [[[1, 3, 160, 160]]] * 5  # verified on the images too


# --------------------------------------------------------------------------- several inputs


def test_two_input_model_by_name_for_export_nodes_and_npz_verify(tmp_path, capsys):
    path = tmp_path / "rgbd.onnx"
    proc = fx("export", RGBD, "--input", "depth=1,1,64,64", "--input", "rgb=1,3,64,64", "--dynamic", "batch",
              "--node", "fuse=fused", "--node", "seg_head.interpolate=seg", "--onnx", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = Manifest.from_dict(json.loads(proc.stdout)["artifacts"][str(path)])
    # forward's order, whatever the command line's; --dynamic batch on both inputs
    assert [(s.name, s.shape) for s in manifest.inputs] == [("rgb", ["batch", 3, 64, 64]),
                                                             ("depth", ["batch", 1, 64, 64])]
    assert main(["nodes", RGBD, "--shapes", "--mode", "eval", "--input", "rgb=1,3,32,32", "--input",
                 "depth=1,1,32,32", "--json"]) == 0
    shapes = {n["name"]: n.get("shape") for n in json.loads(capsys.readouterr().out)["eval"]}
    assert shapes["rgb"] == [1, 3, 32, 32] and shapes["depth"] == [1, 1, 32, 32] and shapes["fuse.2"] == [1, 32, 8, 8]

    samples = tmp_path / "npz"
    samples.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        np.savez(samples / f"s{i}.npz", rgb=rng.standard_normal((1, 3, 64, 64)).astype(np.float32),
                 depth=rng.random((1, 1, 64, 64)).astype(np.float32))
    assert main(["verify", str(path), "--model", RGBD, "--node", "fuse=fused", "--node", "seg_head.interpolate=seg",
                 "--inputs", str(samples), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["inputs"] == [[[1, 3, 64, 64], [1, 1, 64, 64]]] * 3

    _png(samples / "photo.png", 64, 64, seed=3)
    assert main(["verify", str(path), "--model", RGBD, "--node", "fuse=fused", "--node", "seg_head.interpolate=seg",
                 "--inputs", str(samples)]) == 2
    assert "feeds input 'rgb' only, but the model also takes ['depth']" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--input", "rgb=1,3,64,64"], "the model's forward also needs depth"),
    (["--input", "rgb=1,3,64,64", "--input", "colour=1,3,64,64"],
     "--input 'colour' is not an argument of the model's forward (rgb, depth)"),
])
def test_input_errors_are_one_line(argv, message, capsys):
    assert main(["nodes", RGBD, "--shapes", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--input", "x.npy"], "malformed --input 'x.npy': expected NAME=B,C,H,W[:DTYPE]"),
    (["--input", "rgb=1,3,64,64:complex"], "unknown dtype 'complex'"),
    (["--input", "rgb=1,3,8,8", "--input-shape", "1,3,8,8"], "--input-shape: not allowed with argument --input"),
])
def test_malformed_inputs_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["nodes", RGBD, "--shapes", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_optional_none_argument_is_made_concrete_through_the_cli(tmp_path, capsys):
    import onnx

    spec = str(ROOT / "models" / "masked.py") + ":build"
    assert main(["nodes", spec, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"train": ["x", "conv", "relu"], "eval": ["x", "conv", "relu"]}
    path = tmp_path / "masked.onnx"
    proc = fx("export", spec, "--input-shape", "1,3,16,16", "--node", "relu=out", "--onnx", str(path), "--verify")
    assert proc.returncode == 0, proc.stderr
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["x"]
    manifest = read_manifest(path)
    assert manifest.input_names == ["x"] and manifest.concrete_args == {"mask": {"auto": True, "value": None}}
    assert main(["inspect", str(path)]) == 0
    assert "concrete args  mask=None (automatic)" in capsys.readouterr().out
    # named with --input, the optional argument stays an input
    both = tmp_path / "both.onnx"
    assert main(["export", spec, "--input", "x=1,3,16,16", "--input", "mask=1,4,16,16", "--node", "mul=masked",
                 "--onnx", str(both), "--quiet"]) == 0
    assert [i.name for i in onnx.load(str(both)).graph.input] == ["x", "mask"]
    assert read_manifest(both).concrete_args == {}


# --------------------------------------------------------------------------- progress


def test_verify_progress_per_runtime_and_input(timm_onnx):
    from fxexport.verification import verify

    steps = []
    report = verify(timm_onnx, runtimes=["onnxruntime", "openvino"], n_inputs=2, progress=steps.append)
    assert report.ok
    n = len(report.inputs)
    assert [(s.stage, s.runtime, s.input_index) for s in steps] == (
        [("reference", None, None)]
        + [("load", "onnxruntime", None)] + [("run", "onnxruntime", i) for i in range(n)]
        + [("load", "openvino", None)] + [("run", "openvino", i) for i in range(n)])
    assert [s.done for s in steps] == list(range(1, len(steps) + 1)) and {s.total for s in steps} == {len(steps)}


def test_the_cli_progress_bar_is_on_a_terminal_only_and_never_with_quiet_or_json(timm_onnx, capsys, monkeypatch):
    import fxexport.cli as cli
    from rich.console import Console

    terminal = io.StringIO()

    def console(stderr: bool = False):
        if stderr:
            return Console(file=terminal, force_terminal=True, width=120)
        return Console(file=sys.stdout, width=200)

    monkeypatch.setattr(cli, "_console", console)
    assert main(["verify", str(timm_onnx), "--n-inputs", "2"]) == 0
    drawn = terminal.getvalue()
    total = 1 + 1 + 2  # the reference, onnxruntime's load, its 2 inputs
    assert f"{total}/{total}" in drawn and "onnxruntime tr.onnx: input #" in drawn
    for flag in ("--quiet", "--json"):
        terminal.seek(0)
        terminal.truncate()
        capsys.readouterr()
        assert main(["verify", str(timm_onnx), "--n-inputs", "2", flag]) == 0
        assert terminal.getvalue() == "" and capsys.readouterr().err == ""


# --------------------------------------------------------------------------- inspect .pt2, tables at 80 columns


def test_inspect_pt2_shows_the_recorded_cpu_features(tmp_path):
    flags = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile"]
    manifest = {"format": "aoti", "format_version": 2, "exporter": "aoti",
                "inputs": [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}],
                "extra": {"cpu": {"machine": "x86_64", "inductor_isa": "AVX512", "model_name": "Test CPU",
                                  "flags": flags}}}
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/archive_format", "pt2")
        zf.writestr("pkg/data/aotinductor/model/cabc123.wrapper.so", b"\x7fELF" + bytes(64))
        zf.writestr("pkg/data/aotinductor/model/cabc123_metadata.json",
                    json.dumps({"AOTI_DEVICE_KEY": "cpu", MANIFEST_KEY: json.dumps(manifest)}))
    proc = fx("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("  ", 1)[0]: line for line in proc.stdout.splitlines()}
    assert "x86_64, AVX512 (Test CPU)" in rows["compiled for"]
    assert rows["cpu flags"].split()[2:] == flags  # every recorded feature, in order, on its own row
    assert "runs here" in rows and "…" not in proc.stdout


def test_tables_are_whole_at_80_columns_when_not_a_terminal(timm_onnx, tmp_path):
    long_name = "an_output_name_long_enough_to_push_the_verify_table_past_one_hundred_and_sixty_columns_f4"
    path = tmp_path / "long.onnx"
    proc = fx("export", TIMM, "--input-shape", "1,3,64,64", "--node", f"layer4={long_name}", "--onnx", str(path),
              "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    assert any(long_name in line and "ok" in line for line in proc.stdout.splitlines())  # a row, not folded
    bench = subprocess.run(
        [sys.executable, "-c", "from bench_common import print_table; print_table('bench edge', [{'model': "
         "'resnet18', 'variant': 'int8-static', 'file': 'resnet18.int8-static.onnx', 'result': "
         "'MISMATCH: cosine 0.91 below 0.98', 'latency ms': 3.21, 'x faster': 1.7, 'size MB': 11.2}])"],
        cwd=ROOT / "scripts", env=dict(os.environ, COLUMNS="80"), capture_output=True, text=True, timeout=120)
    assert bench.returncode == 0, bench.stderr
    assert "…" not in bench.stdout
    row = next(line for line in bench.stdout.splitlines() if "resnet18" in line)
    assert "int8-static" in row and "MISMATCH: cosine 0.91 below 0.98" in row and "resnet18.int8-static.onnx" in row

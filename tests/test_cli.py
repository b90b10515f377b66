"""The command line, through the real entry point (``python -m fxexport``) for each command and
error path, plus cheaper in-process ``main([...])`` calls for the remaining flags.

Each subprocess imports torch (a few seconds), so they are few: one per command and one per
error path the issue names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fxexport.cli import main

ROOT = Path(__file__).resolve().parents[1]
MULTITASK = str(ROOT / "models" / "multitask.py") + ":build"
TRAIN_EVAL = str(ROOT / "models" / "train_eval.py") + ":build"
NEEDS_LEAF = str(ROOT / "models" / "needs_leaf.py") + ":build"
NODES = ["--node", "trunk.stage3=features", "--node", "cls_head.fc=logits", "--node", "seg_head.interpolate=seg"]


def fx(*args: str, cwd: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``python -m fxexport ARGS`` and return the finished process."""
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fxexport", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fxexport: error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# ----------------------------------------------------------------------------- exported artifacts


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`fxexport export` (subprocess) of the multi-task net to ONNX + TorchScript, verified."""
    out = tmp_path_factory.mktemp("export")
    onnx_path, ts_path = out / "mt.onnx", out / "mt.pt"
    proc = fx("export", MULTITASK, *NODES, "--dynamic", "batch", "--onnx", str(onnx_path),
              "--torchscript", str(ts_path), "--verify", "--n-inputs", "2", "--json")
    return proc, onnx_path, ts_path


def test_export_writes_named_outputs_and_verifies(exported):
    proc, onnx_path, ts_path = exported
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    manifest = data["artifacts"][str(onnx_path)]
    assert [o["name"] for o in manifest["outputs"]] == ["features", "logits", "seg"]
    assert manifest["model"]["spec"] == MULTITASK and manifest["model"]["seed"] == 0
    assert manifest["outputs"][0]["shape"][0] == "batch"
    assert data["verify"]["ok"] is True
    assert onnx_path.is_file() and ts_path.is_file()
    assert not [n for n in files_in(onnx_path.parent) if n.startswith(".")]  # no temp files left

    import onnx

    assert [o.name for o in onnx.load(str(onnx_path)).graph.output] == ["features", "logits", "seg"]
    assert list(torch.jit.load(str(ts_path)).output_names) == ["features", "logits", "seg"]


def test_verify_reads_model_from_manifest(exported, tmp_path):
    _, onnx_path, ts_path = exported
    report = tmp_path / "report.json"
    # the manifest names a file spec (models/multitask.py): imported only with --trust-model-spec
    ok = fx("verify", str(onnx_path), str(ts_path), "--n-inputs", "1", "--report", str(report), "--trust-model-spec")
    assert ok.returncode == 0, ok.stderr
    assert "features" in ok.stdout and json.loads(report.read_text())["ok"] is True


def test_verify_mismatch_exits_1(exported, capsys):
    _, onnx_path, _ = exported
    # the same model with other random weights is a real mismatch: exit 1, the table names the outputs
    code = main(["verify", str(onnx_path), "--model", MULTITASK, "--seed", "1", *NODES, "--n-inputs", "1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "MISMATCH" in captured.out and "logits" in captured.err


def test_inspect_shows_manifest(exported):
    _, onnx_path, _ = exported
    proc = fx("inspect", str(onnx_path))
    assert proc.returncode == 0, proc.stderr
    for text in ("features", "logits", "seg", "batch", "opset", "multitask.py", "trunk.stage3"):
        assert text in proc.stdout, text


def test_inspect_in_process_json_and_foreign_files(exported, tmp_path, capsys):
    _, onnx_path, ts_path = exported
    assert main(["inspect", str(ts_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "torchscript" and [o["name"] for o in data["outputs"]] == ["features", "logits", "seg"]

    # an ONNX file fxexport did not write: show its inputs/outputs, then a clear error (exit 2)
    import onnx

    foreign = onnx.load(str(onnx_path))
    del foreign.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(foreign, str(path))
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert "features" in captured.out and "seg" in captured.out
    assert "carries no fxexport manifest" in captured.err
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    assert main(["inspect", str(tmp_path / "junk.onnx")]) == 2
    assert "fxexport: error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- export error paths


def test_export_unknown_node_suggests_and_leaves_nothing(tmp_path):
    proc = fx("export", MULTITASK, "--node", "trunk.stage9=f", "--onnx", str(tmp_path / "x.onnx"),
              "--torchscript", str(tmp_path / "x.pt"))
    assert_one_line_error(proc, "trunk.stage9", "trunk.stage")
    assert files_in(tmp_path) == []


def test_export_malformed_node(tmp_path):
    proc = fx("export", MULTITASK, "--node", "=feat", "--onnx", str(tmp_path / "x.onnx"))
    assert_one_line_error(proc, "malformed --node '=feat'", "NODE=NAME")
    assert files_in(tmp_path) == []


def test_export_mismatched_weights(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    proc = fx("export", MULTITASK, *NODES, "--weights", str(weights), "--onnx", str(tmp_path / "x.onnx"))
    assert_one_line_error(proc, "does not match the model", "missing keys", "unexpected keys 'conv.weight'")
    assert files_in(tmp_path) == ["w.pt"]


def test_export_argument_errors_in_process(tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    cases = [
        (["--node", "layer1", "--onnx", out, "--input-shape", "1,3,,224"], "malformed shape '1,3,,224'"),
        (["--node", "layer1", "--onnx", out, "--input-shape", "1,0,8,8"], "malformed shape"),
        (["--node", "layer1", "--onnx", out, "--dynamic", "batch,depth"], "unknown dynamic dim 'depth'"),
        (["--node", "a=b=c", "--onnx", out], "malformed --node 'a=b=c'"),
        (["--node", "layer1", "--onnx", out, "--atol", "-1"], "expected a number >= 0"),
    ]
    for extra, fragment in cases:
        with pytest.raises(SystemExit) as info:
            main(["export", "torchvision:resnet18", *extra])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fxexport: error: ") and fragment in err, err

    cases = [
        (["--node", "layer1"], "nothing to write"),
        (["--node", "layer1=f", "--node", "layer2=f", "--onnx", out], "output name 'f' is used by two"),
        (["--node", "layer1", "--onnx", out, "--weights", str(tmp_path / "none.pt")], "does not exist"),
        (["--node", "layer1", "--onnx", out, "--model-kwargs", "{bad"], "not valid JSON"),
    ]
    for extra, fragment in cases:
        assert main(["export", "torchvision:resnet18", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fxexport: error: ") and fragment in err, err
    assert files_in(tmp_path) == []


def test_verify_argument_errors_in_process(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["verify", "x.onnx", "--node", "layer1"]) == 2
    assert "--node needs --model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- nodes


def test_nodes_json_marks_train_only_nodes():
    proc = fx("nodes", TRAIN_EVAL, "--shapes", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    train = {n["name"]: n for n in data["train"]}
    eval_ = {n["name"]: n for n in data["eval"]}
    assert "aux_head.fc" in train and "aux_head.fc" not in eval_
    assert train["aux_head.fc"]["shape"] == [1, 10] and train["aux_head.fc"]["op"] == "Linear"
    assert eval_["stage2.0"]["shape"] == [1, 32, 8, 8] and eval_["stage2.0"]["dtype"] == "float32"


def test_nodes_unknown_model_suggests():
    proc = fx("nodes", "torchvision:resnt18")
    assert_one_line_error(proc, "unknown torchvision model 'resnt18'", "'torchvision:resnet18'")


def test_nodes_flags_in_process(capsys):
    assert main(["nodes", TRAIN_EVAL, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "aux_head.fc\ttrain only" in lines and "fc" in lines

    assert main(["nodes", TRAIN_EVAL, "--mode", "eval", "--quiet", "--filter", r"^stage2\."]) == 0
    assert capsys.readouterr().out.split() == ["stage2.0", "stage2.1", "stage2.2"]

    assert main(["nodes", TRAIN_EVAL, "--tree", "--shapes", "--input-shape", "2,3,64,64"]) == 0
    out = capsys.readouterr().out
    assert "aux_head" in out and "[2, 16, 32, 32]" in out and "train only" in out

    assert main(["nodes", TRAIN_EVAL, "--shapes", "--mode", "train"]) == 0
    out = capsys.readouterr().out
    assert "AdaptiveAvgPool2d" in out and "[1, 16, 1, 1]" in out

    assert main(["nodes", TRAIN_EVAL, "--json", "--mode", "eval"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["eval"]


def test_nodes_errors_in_process(capsys):
    assert main(["nodes", NEEDS_LEAF]) == 2
    err = capsys.readouterr().err
    assert "Gate" in err and "--leaf-module" in err and err.count("\n") == 1
    assert main(["nodes", NEEDS_LEAF, "--leaf-module", "Gate", "--quiet", "--mode", "eval"]) == 0
    assert "gate" in capsys.readouterr().out.split()
    assert main(["nodes", NEEDS_LEAF, "--leaf-module", "Gat"]) == 2
    assert "closest: 'Gate'" in capsys.readouterr().err
    assert main(["nodes", TRAIN_EVAL, "--shapes", "--input-shape", "1,3,8"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nodes", TRAIN_EVAL, "--filter", "("])
    assert "malformed --filter regex" in capsys.readouterr().err
    assert main(["nodes", "resnet18"]) == 2
    assert "did you mean 'torchvision:resnet18'" in capsys.readouterr().err


def test_debug_shows_traceback(capsys):
    assert main(["--debug", "nodes", "torchvision:resnt18"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["nodes", "torchvision:resnt18", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_help_has_examples(capsys):
    for command in ("nodes", "export", "verify", "inspect", "demo", "cpp-example", "optimize", "zoo"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and f"fxexport {command}" in out, command
    assert main([]) == 2
    assert "no command given" in capsys.readouterr().err


def test_module_docstring_lists_every_command():
    import re

    import fxexport.cli as cli

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    listed = re.findall(r"``([a-z-]+)``", cli.__doc__.split("Commands:")[1].split("Every command")[0])
    assert sorted(listed) == sorted(sub.choices)


# ----------------------------------------------------------------------------- demo


def test_demo_end_to_end(tmp_path):
    proc = fx("demo", "--out", str(tmp_path / "demo"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "demo" / "resnet18_features.onnx").is_file()
    assert (tmp_path / "demo" / "resnet18_features.pt").is_file()
    for text in ("layer1", "feat4", "logits", "onnxruntime", str(tmp_path / "demo")):
        assert text in proc.stdout, text


def test_weights_flow_export_then_verify_needs_same_weights(tmp_path, capsys):
    from safetensors.torch import save_file

    from fxexport.models import load_model

    model = load_model(MULTITASK, kwargs={"num_classes": 4}, seed=3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    other = tmp_path / "other.pt"
    torch.save(load_model(MULTITASK, kwargs={"num_classes": 4}, seed=4).state_dict(), other)
    onnx_path, ts_path = tmp_path / "w.onnx", tmp_path / "w.pt"
    code = main(["export", MULTITASK, "--model-kwargs", '{"num_classes": 4}', "--weights", str(weights),
                 "--node", "cls_head.fc=logits", "--onnx", str(onnx_path), "--exporter", "torchscript",
                 "--opset", "17", "--torchscript", str(ts_path), "--ts-method", "trace", "--input-shape", "2,3,32,32",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.split() == [str(onnx_path), str(ts_path)]

    assert main(["inspect", str(onnx_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["opset"] == 17 and info["manifest"]["exporter"] == "torchscript"
    assert info["manifest"]["model"]["kwargs"] == {"num_classes": 4}
    assert len(info["manifest"]["model"]["weights_sha256"]) == 64
    assert info["outputs"] == [{"name": "logits", "shape": [2, 4], "dtype": "float32"}]

    trust = "--trust-model-spec"  # the manifest names a file spec (models/multitask.py)
    assert main(["verify", str(onnx_path), "--n-inputs", "1", trust]) == 2
    assert "pass the same file with --weights" in capsys.readouterr().err
    assert main(["verify", str(onnx_path), "--weights", str(other), "--n-inputs", "1", trust]) == 2
    assert "is not the one the artifact was exported with" in capsys.readouterr().err
    assert main(["verify", str(onnx_path), str(ts_path), "--weights", str(weights), "--n-inputs", "1",
                 "--atol", "1e-5", "--rtol", "1e-4", "--json", trust]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


# ----------------------------------------------------------------------------- OpenVINO IR and LiteRT


TWO_HEAD = str(ROOT / "models" / "two_head.py") + ":build"
TWO_HEAD_ARGS = ["--leaf-module", "DetHead", "--leaf-module", "SegHead", "--node", "backbone.2=features",
                 "--node", "det_head=det", "--node", "seg_head=seg", "--input-shape", "2,3,64,64"]
TWO_HEAD_OUTPUTS = ["features", "det.0", "det.1", "seg.mask", "seg.edge"]


def two_head_extractor():
    from fxexport.extractor import create_feature_extractor
    from fxexport.models import load_model, resolve_leaf_modules

    model = load_model(TWO_HEAD, seed=0)
    return create_feature_extractor(model, {"backbone.2": "features", "det_head": "det", "seg_head": "seg"},
                                    leaf_modules=resolve_leaf_modules(model, ["DetHead", "SegHead"])).eval()


@pytest.fixture(scope="module")
def ir_and_tflite(tmp_path_factory):
    """`fxexport export --openvino --tflite --verify` (subprocess) of models/two_head.py (nested outputs)."""
    out = tmp_path_factory.mktemp("ov_litert")
    xml, tflite = out / "th.xml", out / "th.tflite"
    proc = fx("export", TWO_HEAD, *TWO_HEAD_ARGS, "--openvino", str(xml), "--tflite", str(tflite),
              "--verify", "--n-inputs", "2", "--json", timeout=600)
    return proc, xml, tflite


def test_export_openvino_and_tflite_with_verify(ir_and_tflite):
    proc, xml, tflite = ir_and_tflite
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["artifacts"][str(xml)]["format"] == "openvino"
    assert data["artifacts"][str(tflite)]["format"] == "litert"
    for path in (xml, tflite):
        manifest = data["artifacts"][str(path)]
        assert [o["name"] for o in manifest["outputs"]] == TWO_HEAD_OUTPUTS
        assert manifest["model"]["spec"] == TWO_HEAD and manifest["nodes"]["det_head"] == "det"
    # --verify ran each file in its own runtime, every flat output compared and within tolerance
    report = data["verify"]
    assert report["ok"] is True
    assert [(a["path"], a["runtime"]) for a in report["artifacts"]] == [(str(xml), "openvino"),
                                                                        (str(tflite), "litert")]
    checked = {(c["runtime"], c["name"]) for c in report["checks"] if c["ok"]}
    assert checked == {(r, n) for r in ("openvino", "litert") for n in TWO_HEAD_OUTPUTS}
    assert xml.is_file() and xml.with_suffix(".bin").is_file() and tflite.is_file()
    assert not [n for n in files_in(xml.parent) if n.startswith(".")]  # no temp files left


def test_inspect_ir_and_tflite_show_their_manifest(ir_and_tflite, capsys):
    _, xml, tflite = ir_and_tflite
    for path, fmt, fact in ((xml, "openvino", "bin sha256"), (tflite, "litert", "exporter")):
        assert main(["inspect", str(path)]) == 0
        out = capsys.readouterr().out
        for text in (fmt, fact, "two_head.py", "backbone.2", "det_head", "seg_head", *TWO_HEAD_OUTPUTS,
                     "[2, 3, 64, 64]"):
            assert text in out, (path.name, text)
        assert main(["inspect", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["format"] == fmt and info["manifest"]["format"] == fmt and info["error"] is None
        assert [o["name"] for o in info["outputs"]] == TWO_HEAD_OUTPUTS
        assert main(["inspect", str(path), "--quiet"]) == 0
        assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == TWO_HEAD_OUTPUTS


def test_verify_runtime_openvino_runs_an_onnx_in_openvino(exported, capsys):
    _, onnx_path, _ = exported
    proc = fx("verify", str(onnx_path), "--runtime", "openvino", "--n-inputs", "1", "--trust-model-spec", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert [(a["path"], a["format"], a["runtime"]) for a in report["artifacts"]] == [(str(onnx_path), "onnx",
                                                                                      "openvino")]
    assert {c["name"] for c in report["checks"]} == {"features", "logits", "seg"}
    # repeatable: the same file in both runtimes, one report (aliases as verify takes them)
    assert main(["verify", str(onnx_path), "--runtime", "ov", "--runtime", "onnxruntime", "--n-inputs", "1",
                 "--trust-model-spec", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(a["runtime"] for a in report["artifacts"]) == ["onnxruntime", "openvino"]
    assert main(["verify", str(onnx_path), "--runtime", "tensorrt", "--trust-model-spec"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fxexport: error: ") and "tensorrt" in err and "openvino" in err


def test_verify_ir_and_tflite_by_runtime(ir_and_tflite, capsys):
    _, xml, tflite = ir_and_tflite
    # --runtime picks among the given artifacts: only the .tflite runs in litert
    assert main(["verify", str(xml), str(tflite), "--runtime", "litert", "--n-inputs", "1", "--trust-model-spec",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(a["path"], a["runtime"]) for a in report["artifacts"]] == [(str(tflite), "litert")]
    assert report["ok"] is True and {c["name"] for c in report["checks"]} == set(TWO_HEAD_OUTPUTS)


def test_optimize_backends_onnxruntime_and_openvino_in_one_table(exported, tmp_path, capsys):
    _, onnx_path, _ = exported
    out, report_path = tmp_path / "edge", tmp_path / "edge.json"
    proc = fx("optimize", str(onnx_path), "--int8", "static", "--calibration-random", "4", "--backend", "onnxruntime",
              "--backend", "openvino", "-o", str(out), "--n-inputs", "1", "--no-timing", "--trust-model-spec",
              "--report", str(report_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("edge variants of mt.onnx") == 1  # one table for both backends
    assert "openvino:fp32" in proc.stdout and "optimized" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert [(v["name"], v["backend"]) for v in report["variants"]] == [
        ("fp32", "onnxruntime"), ("optimized", "onnxruntime"), ("int8-static", "onnxruntime"),
        ("openvino:fp32", "openvino"), ("openvino:int8-static", "openvino")]
    for v in report["variants"]:
        assert v["verified"] and [o["name"] for o in v["outputs"]] == ["features", "logits", "seg"], v["name"]
    assert sorted(files_in(out)) == ["mt.fp32.bin", "mt.fp32.xml", "mt.int8-static.bin", "mt.int8-static.onnx",
                                     "mt.int8-static.xml", "mt.optimized.onnx"]
    # the backends are checked by the library, before anything is written: one line, exit 2
    assert main(["optimize", str(onnx_path), "--backend", "tensorrt", "-o", str(tmp_path / "no"),
                 "--trust-model-spec"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorrt" in err and "openvino" in err
    assert not (tmp_path / "no").exists()


# ----------------------------------------------------------------------------- cpp-example --runtime openvino


def test_cpp_example_openvino_runs_onnx_and_ir_by_name(ir_and_tflite, tmp_path, capsys):
    import numpy as np
    from _cpp_artifacts import CACHE, max_scaled_error

    from fxexport.formats.onnx import export_onnx

    _, xml, _ = ir_and_tflite
    extractor = two_head_extractor()
    onnx_path = tmp_path / "th.onnx"
    export_onnx(extractor, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), onnx_path,
                dynamic=["batch"])
    cache = str(CACHE / "cpp")
    assert main(["cpp-example", "--runtime", "openvino", "--cache-dir", cache]) == 0
    binary = capsys.readouterr().out.strip()
    assert Path(binary).name.startswith("fxexport_openvino-")
    assert main(["cpp-example", "--runtime", "openvino", "--cache-dir", cache, "--out", str(tmp_path / "o")]) == 2
    assert "options of --run ARTIFACT" in capsys.readouterr().err and not (tmp_path / "o").exists()

    # through the real entry point: the IR, --input and --out
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "x.npy", x.numpy())
    proc = fx("cpp-example", "--runtime", "openvino", "--cache-dir", cache, "--run", str(xml),
              "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "ir_out"))
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t")[0] for line in proc.stdout.splitlines() if "\tshape=" in line]
    assert lines == TWO_HEAD_OUTPUTS
    listing = json.loads((tmp_path / "ir_out" / "outputs.json").read_text())
    assert listing["kind"] == "openvino" and [o["name"] for o in listing["outputs"]] == TWO_HEAD_OUTPUTS
    from fxexport.flatten import OutputSpec, flatten

    with torch.no_grad():
        out = extractor(x)
    ref = dict(zip(OutputSpec.from_outputs(out).names, flatten(OutputSpec.from_outputs(out), out)))
    for item in listing["outputs"]:
        got = torch.from_numpy(np.load(tmp_path / "ir_out" / item["file"]))
        assert max_scaled_error(ref[item["name"]], got) <= 1e-4, item["name"]

    # in process: an .onnx at another batch than the export's (dynamic), --json and --quiet
    x3 = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    np.save(tmp_path / "x3.npy", x3.numpy())
    assert main(["cpp-example", "--runtime", "openvino", "--cache-dir", cache, "--run", str(onnx_path),
                 "--input", str(tmp_path / "x3.npy"), "--threads", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["binary"] == binary and data["kind"] == "onnx" and data["threads"] == 1
    assert [o["name"] for o in data["outputs"]] == TWO_HEAD_OUTPUTS
    assert [o["shape"][0] for o in data["outputs"]] == [3] * 5
    assert main(["cpp-example", "--runtime", "openvino", "--cache-dir", cache, "--run", str(onnx_path),
                 "--quiet"]) == 0  # no --input: seeded random input of the manifest's shape
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == TWO_HEAD_OUTPUTS
    # an IR whose .bin is not the one its .xml records: the program's one line, exit 2
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(xml.read_bytes())
    (tmp_path / "tampered.bin").write_bytes(b"\0" + xml.with_suffix(".bin").read_bytes()[1:])
    assert main(["cpp-example", "--runtime", "openvino", "--cache-dir", cache, "--run", str(tampered),
                 "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fxexport: error: fxexport_openvino: error: ") and "bin" in err


# ----------------------------------------------------------------------------- display


def test_tables_show_untrusted_names_literally():
    from fxexport.display import ArtifactView, ManifestView, NodeListing
    from fxexport.describe import NodeInfo
    from fxexport.manifest import Manifest, TensorSpec

    evil = "[red]x[/red][link=file:///etc]y"
    m = Manifest(inputs=[TensorSpec("in", [1, 3], "float32")], outputs=[TensorSpec(evil, [1, 2], "float32")],
                 nodes={"[b]node": evil}, format="onnx")
    text = ManifestView(m, "a.onnx", size_bytes=10).render()
    assert evil in text and "[b]node" in text
    info = {"path": "[i]p.onnx", "size_bytes": 1, "format": "onnx", "manifest": m.to_dict(), "facts": {"[u]k": "[v]"},
            "inputs": [t.to_dict() for t in m.inputs], "outputs": [t.to_dict() for t in m.outputs], "error": None}
    text = ArtifactView(info).render()
    assert evil in text and "[i]p.onnx" in text and "[u]k" in text and "[v]" in text
    rows = {"eval": [NodeInfo(evil, "[op]", "call_function", shape=[1, 2])]}
    for tree in (False, True):
        text = NodeListing.from_modes("[m]", rows, shapes=True, tree=tree).render()
        assert evil in text and "[m]" in text and "[op]" in text, text

"""The compatibility sweep: a five-model smoke run, worker isolation (hang, crash), resume,
the matrix, the Ray backend on a local Ray instance, and the command line.

The builders at the bottom of this file (``hang``, ``crash``, ``tiny``) are model specs
for the sweep (``tests/test_zoo.py:hang``): a worker loads this file as a model file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fxexport import zoo

ROOT = Path(__file__).resolve().parents[1]
HERE = str(Path(__file__).resolve())


def _entry(spec: str, size: int = 0, **kw) -> zoo.ZooModel:
    return zoo.ZooModel(id=kw.pop("id", spec), spec=spec, group=kw.pop("group", "test"), family="test",
                        kwargs={}, sizes=(size,), **kw)


# --------------------------------------------------------------------------- the smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One sweep: the five smoke models, plus a model that crashes its worker, one that hangs
    (3 s limit) and one stuck where the soft limit cannot reach it (2 s + 2 s hard limit)."""
    tmp = tmp_path_factory.mktemp("zoo")
    results = tmp / "results.jsonl"
    faults = [
        _entry(f"{HERE}:crash", id="fault:crash"),
        _entry(f"{HERE}:hang", id="fault:hang", timeout=3.0),
        _entry(f"{HERE}:stuck", id="fault:stuck", timeout=2.0),
    ]
    models = faults + zoo.zoo_models("smoke")  # faults first: the crash breaks the pool while little else runs
    t0 = time.perf_counter()
    stats: dict = {}
    rows = zoo.run_sweep(models, results=results, workers=2, timeout=600, progress=False, stats=stats,
                         fixes=True, hard_grace=2.0)
    return {"rows": rows, "results": results, "models": models, "wall": time.perf_counter() - t0,
            "stats": stats, "tmp": tmp}


def test_smoke_models_export_and_verify(smoke):
    rows = smoke["rows"]
    for model in zoo.zoo_models("smoke"):
        row = rows[model.id]
        assert row["status"] == "ok", (model.id, row.get("failure"))
        steps = row["steps"]
        assert steps["trace"]["nodes_eval"] > 0 and steps["trace"]["time_s"] >= 0
        auto = steps["onnx_auto"]
        assert auto["exporter"] in ("dynamo", "torchscript")
        assert auto["verify_ok"] and auto["verify_batches"] == [1, 3]
        other = "onnx_dynamo" if auto["exporter"] == "torchscript" else "onnx_torchscript"
        assert other in steps, "the other exporter runs too"
        assert "torchscript" in steps
        assert row["input_shape"][0] == zoo.EXPORT_BATCH
        assert steps["nodes"]["random"] is not None
        assert steps["extractor"]["outputs"] == len(steps["nodes"]["stages"]) + 1


def test_smoke_needs_leaf_dynamo_failure_is_one_categorized_line(smoke):
    row = smoke["rows"]["models/needs_leaf.py:build"]
    dynamo = row["steps"]["onnx_dynamo"]
    assert not dynamo["ok"]
    assert dynamo["category"] == "untraceable"  # control flow on a tensor value, for torch.export
    assert "cause:" in dynamo["error"] and "\n" not in dynamo["error"]
    assert "onnx_dynamo [untraceable]" in row["failure"]
    assert "exporter='torchscript'" in row["fix"]


def test_hang_is_a_timeout_and_the_sweep_goes_on(smoke):
    row = smoke["rows"]["fault:hang"]
    assert row["status"] == "fail" and row["category"] == "timeout"
    assert row["timed_out_in"] == "input"
    assert row["total_s"] < 25


def test_stuck_worker_hits_the_hard_limit(smoke):
    row = smoke["rows"]["fault:stuck"]
    assert row["status"] == "fail" and row["category"] == "timeout"
    assert "hard time limit" in row["failure"] and row["crashed_in"] == "input"


def test_crash_is_recorded_and_the_sweep_goes_on(smoke):
    row = smoke["rows"]["fault:crash"]
    assert row["status"] == "fail" and row["category"] == "crash"
    assert row["crashed_in"] == "input"
    assert all(smoke["rows"][m.id]["status"] == "ok" for m in zoo.zoo_models("smoke"))


def test_results_are_appended_as_jsonl(smoke):
    lines = smoke["results"].read_text().splitlines()
    assert len(lines) == len(smoke["models"])
    assert {json.loads(ln)["id"] for ln in lines} == {m.id for m in smoke["models"]}


def test_rerun_skips_finished_models(smoke):
    stats: dict = {}
    t0 = time.perf_counter()
    rows = zoo.run_sweep(smoke["models"], results=smoke["results"], progress=False, stats=stats)
    assert stats == {"models_run": 0, "skipped": len(smoke["models"])}
    assert time.perf_counter() - t0 < 5
    assert set(rows) == {m.id for m in smoke["models"]}
    assert len(smoke["results"].read_text().splitlines()) == len(smoke["models"])


def test_matrix_from_smoke_results(smoke):
    md, js = smoke["tmp"] / "compat.md", smoke["tmp"] / "compat.json"
    text = zoo.write_matrix(smoke["rows"], md, js, meta={"wall_s": smoke["wall"], "workers": 2})
    assert md.read_text() == text
    assert "| torchvision:resnet18 |" in text and "✅" in text
    data = json.loads(js.read_text())
    figures = data["summary"]["torchvision classification"]
    assert figures == {"models": 2, "ok": 2, "all_ok": 2, "ok_pct": 100.0, "categories": {}}
    assert data["summary"]["test"]["categories"] == {"timeout": 2, "crash": 1}
    by_id = {m["id"]: m for m in data["models"]}
    assert by_id["torchvision:resnet18"]["onnx_auto"]["verify_batches"] == [1, 3]
    assert "timeout" in text and "crash" in text


# --------------------------------------------------------------------------- units


def test_categories():
    assert zoo.categorize("trace", RuntimeError("x")) == "untraceable"
    assert zoo.categorize("onnx_dynamo", "Invalid ranges [2:1]") == "dynamic shape"
    assert zoo.categorize("onnx_torchscript", "Exporting the operator 'aten::foo' to ONNX opset 18 is not supported") \
        == "unsupported op"
    assert zoo.categorize("onnx_dynamo", "GuardOnDataDependentSymNode: Could not guard") == "untraceable"
    assert zoo.categorize("verify", "values differ") == "mismatch"
    assert zoo.categorize("onnx_auto", "something else") == "other"


def test_model_sets():
    everything = zoo.zoo_models("all")
    ids = [m.id for m in everything]
    assert len(ids) == len(set(ids))
    import torchvision

    classification = zoo.zoo_models("classification")
    assert {m.id for m in classification} == {f"torchvision:{n}" for n in
                                             torchvision.models.list_models(module=torchvision.models)}
    assert len(zoo.zoo_models("segmentation")) == len(torchvision.models.list_models(module=torchvision.models.segmentation))
    assert {m.family for m in zoo.zoo_models("detection")} == {"resnet_fpn_backbone", "mobilenet_backbone"}
    timm_set = zoo.zoo_models("timm")
    assert len(timm_set) >= 40
    families = {m.family for m in timm_set}
    for fam in ("resnet", "resnext", "efficientnet", "mobilenetv3", "mobilenetv4", "convnext", "regnet",
                "densenet", "repvgg", "ghostnet", "nfnet", "vit", "deit", "swin", "maxvit", "levit", "coat", "eva"):
        assert fam in families, fam
    import timm

    assert all(m.id.split(":", 1)[1] in timm.list_models() for m in timm_set)
    assert len(zoo.zoo_models("smoke")) == 5


def test_node_choice_on_resnet18():
    import torchvision

    from fxexport import get_graph_node_names
    from fxexport.describe import describe_nodes

    model = torchvision.models.resnet18().eval()
    train, eval_ = get_graph_node_names(model)
    infos = describe_nodes(model, torch.rand(1, 3, 64, 64))
    stages, pick, _ = zoo.choose_nodes(model, infos, train, eval_, "torchvision:resnet18")
    assert [s for s in stages if s.startswith("layer")] == [
        "layer1.1.relu_1", "layer2.1.relu_1", "layer3.1.relu_1", "layer4.1.relu_1"]
    assert stages[-1] == "fc"
    assert pick in eval_ and pick not in stages
    assert zoo.choose_nodes(model, infos, train, eval_, "torchvision:resnet18")[1] == pick  # seeded


def test_node_choice_uses_timm_feature_info():
    from fxexport import get_graph_node_names
    from fxexport.describe import describe_nodes
    from fxexport.models import load_model

    model = load_model("timm:test_resnet")
    modules = zoo.timm_feature_modules(model)
    assert modules
    train, eval_ = get_graph_node_names(model)
    infos = describe_nodes(model, torch.rand(1, 3, 64, 64))
    stages, _, _ = zoo.choose_nodes(model, infos, train, eval_, "timm:test_resnet")
    assert len(stages) == len(modules)
    assert all(s == m or s.startswith(m + ".") for s, m in zip(stages, modules))


def test_optional_forward_argument_gets_the_concrete_args_fix(tmp_path):
    """FX traces `if mask is not None:` with a Proxy for mask; the task finds concrete_args."""
    entry = _entry(f"{HERE}:masked", id="masked", group="test").to_dict()
    row = zoo.run_model_task(entry, {"work_dir": str(tmp_path), "redirect": False, "timeout": 300})
    assert row["status"] == "ok", row.get("failure")
    assert "concrete_args={'mask': None}" in row["fix"]
    assert "NoneType" in row["steps"]["nodes"]["first_error"]


# --------------------------------------------------------------------------- command line


def test_cli_lists_the_models(capsys):
    from fxexport.cli import main

    assert main(["zoo", "--list", "--models", "smoke"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in out] == [m.id for m in zoo.zoo_models("smoke")]


# --------------------------------------------------------------------------- Ray


@pytest.mark.slow  # starting Ray and a fresh worker per model takes ~20-60 s
def test_ray_backend_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        models = [_entry(f"{HERE}:tiny", id="tiny"), _entry(f"{HERE}:crash", id="fault:crash")]
        rows = zoo.run_sweep(models, results=tmp_path / "r.jsonl", backend="ray", workers=1, timeout=60,
                             progress=False)
    finally:
        ray.shutdown()
    assert rows["tiny"]["status"] == "ok", rows["tiny"].get("failure")
    assert rows["tiny"]["steps"]["onnx_auto"]["verify_batches"] == [1, 3]
    assert rows["fault:crash"]["category"] == "crash"
    assert rows["fault:crash"]["pid"] if "pid" in rows["fault:crash"] else True


# --------------------------------------------------------------------------- builders used as model specs


class _Hang(nn.Module):
    example_input_shape = (1, 3, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        time.sleep(float(os.environ.get("FXEXPORT_ZOO_TEST_HANG", "120")))
        return self.conv(x)


class _Crash(_Hang):
    def forward(self, x):
        os._exit(17)  # the worker dies without a word, like a segfault or the OOM killer


class _Stuck(_Hang):
    def forward(self, x):
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like a long call inside C code
        time.sleep(120)


class _Tiny(nn.Module):
    example_input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean(dim=(2, 3)))


class _Masked(_Tiny):
    def forward(self, x, mask=None):
        y = self.stage(self.stem(x))
        if mask is not None:
            y = y * mask.view(-1, 1, 8, 8)
        return self.head(y.mean(dim=(2, 3)))


def masked():
    return _Masked()


def hang():
    return _Hang()


def crash():
    return _Crash()


def stuck():
    return _Stuck()


def tiny():
    return _Tiny()

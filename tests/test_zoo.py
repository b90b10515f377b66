"""The compatibility sweep: a five-model smoke run, worker isolation on the pebble pool (hang,
a worker that ignores SIGTERM, exit, segfault), resume, the matrix (byte for byte from the stored
JSON), the Ray backend on a local Ray instance, the command line, and what importing the CLI
does not import.

The builders at the bottom of this file (``hang``, ``crash``, ``tiny``) are model specs
for the sweep (``tests/test_zoo.py:hang``): a worker loads this file as a model file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
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
    """One sweep: the five smoke models, plus a model whose worker exits, one that segfaults, one
    that hangs (3 s limit) and one that blocks SIGTERM (2 s limit: pebble escalates to SIGKILL)."""
    tmp = tmp_path_factory.mktemp("zoo")
    results = tmp / "results.jsonl"
    faults = [
        _entry(f"{HERE}:crash", id="fault:crash"),
        _entry(f"{HERE}:segfault", id="fault:segfault"),
        _entry(f"{HERE}:hang", id="fault:hang", timeout=3.0),
        _entry(f"{HERE}:stuck", id="fault:stuck", timeout=2.0),
    ]
    models = faults + zoo.zoo_models("smoke")  # faults first: they die while the smoke models run beside them
    t0 = time.perf_counter()
    stats: dict = {}
    rows = zoo.run_sweep(models, results=results, workers=2, timeout=600, progress=False, stats=stats,
                         fixes=True)
    return {"rows": rows, "results": results, "models": models, "wall": time.perf_counter() - t0,
            "stats": stats, "tmp": tmp}


def test_smoke_models_export_and_verify(smoke):
    rows = smoke["rows"]
    for model in zoo.zoo_models("smoke"):
        row = rows[model.id]
        assert row.status == "ok", (model.id, row.failure)
        steps = row.steps
        assert steps["trace"].nodes_eval > 0 and steps["trace"].time_s >= 0
        auto = steps["onnx_auto"]
        assert auto.exporter in ("dynamo", "torchscript")
        assert auto.verify_ok and auto.verify_batches == [1, 3]
        other = "onnx_dynamo" if auto.exporter == "torchscript" else "onnx_torchscript"
        assert other in steps, "the other exporter runs too"
        assert "torchscript" in steps
        assert row.input_shape[0] == zoo.EXPORT_BATCH
        assert steps["nodes"].random is not None
        assert steps["extractor"].outputs == len(steps["nodes"].stages) + 1


def test_smoke_needs_leaf_dynamo_failure_is_one_categorized_line(smoke):
    row = smoke["rows"]["models/needs_leaf.py:build"]
    dynamo = row.steps["onnx_dynamo"]
    assert not dynamo.ok
    assert dynamo.category == "untraceable"  # control flow on a tensor value, for torch.export
    assert dynamo.category is zoo.Category.UNTRACEABLE
    assert "cause:" in dynamo.error and "\n" not in dynamo.error
    assert "onnx_dynamo [untraceable]" in row.failure
    assert "exporter='torchscript'" in row.fix


def test_hang_is_a_timeout_and_the_sweep_goes_on(smoke):
    row = smoke["rows"]["fault:hang"]
    assert row.status == "fail" and row.category == "timeout"
    assert row.category is zoo.Category.TIMEOUT
    assert row.timed_out_in == "input"
    assert row.steps["build"].ok and row.steps["build"].params_m is not None, "the steps done are kept"
    assert row.steps["input"].category is zoo.Category.TIMEOUT
    assert row.time_limit_s == 3.0


def test_worker_ignoring_sigterm_is_still_stopped_at_its_limit(smoke):
    """pebble stops a worker past its limit with SIGTERM, then SIGKILL: one that blocks SIGTERM
    (like a long call in C code that will not return) is a timeout in its step too."""
    row = smoke["rows"]["fault:stuck"]
    assert row.status == "fail" and row.category == "timeout"
    assert "hard time limit" in row.failure and row.timed_out_in == "input"
    assert row.crashed_in is None


def test_crash_is_recorded_and_the_sweep_goes_on(smoke):
    row = smoke["rows"]["fault:crash"]
    assert row.status == "fail" and row.category == "crash"
    assert row.category is zoo.Category.CRASH
    assert row.crashed_in == "input"
    assert "exit code 17" in row.failure
    assert all(smoke["rows"][m.id].status == "ok" for m in zoo.zoo_models("smoke"))


def test_segfault_is_recorded_as_a_crash(smoke):
    row = smoke["rows"]["fault:segfault"]
    assert row.status == "fail" and row.category is zoo.Category.CRASH
    assert row.crashed_in == "input" and "SIGSEGV" in row.failure
    assert row.fix == "run it alone with more memory"


def test_results_are_appended_as_jsonl(smoke):
    lines = smoke["results"].read_text().splitlines()
    assert len(lines) == len(smoke["models"])
    assert {json.loads(ln)["id"] for ln in lines} == {m.id for m in smoke["models"]}


def test_rerun_skips_finished_models(smoke):
    stats: dict = {}
    rows = zoo.run_sweep(smoke["models"], results=smoke["results"], progress=False, stats=stats)
    assert stats == {"models_run": 0, "skipped": len(smoke["models"])}  # nothing ran again
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
    assert data["summary"]["test"]["categories"] == {"timeout": 2, "crash": 2}
    by_id = {m["id"]: m for m in data["models"]}
    assert by_id["torchvision:resnet18"]["onnx_auto"]["verify_batches"] == [1, 3]
    assert "timeout" in text and "crash" in text


def test_killed_sweep_leaves_no_worker_running(tmp_path):
    """A sweep killed outright (SIGKILL: no cleanup) takes its workers with it."""
    script = (f"from fxexport import zoo\n"
              f"if __name__ == '__main__':\n"
              f"    m = zoo.ZooModel('fault:hang', {HERE + ':hang'!r}, 'test', 'test', sizes=(0,))\n"
              f"    zoo.run_sweep([m], results={str(tmp_path / 'r.jsonl')!r}, timeout=600, progress=False)\n")
    (tmp_path / "sweep.py").write_text(script)
    sweep = subprocess.Popen([sys.executable, str(tmp_path / "sweep.py")], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = zoo.task.progress_path(tmp_path, "fault:hang")
    try:
        for _ in range(600):  # the worker writes its progress as its first step starts
            if progress.exists():
                break
            assert sweep.poll() is None, "the sweep ended before its worker started"
            time.sleep(0.2)
        worker = json.loads(progress.read_text())["result"]["pid"]
        assert _alive(worker)
    finally:
        sweep.kill()
        sweep.wait()
    for _ in range(100):
        if not _alive(worker):
            break
        time.sleep(0.1)
    assert not _alive(worker), f"worker {worker} outlived the killed sweep"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")  # a zombie has ended


def _rows_from_matrix_json(data: dict) -> list[dict]:
    """Results rows rebuilt from the compact entries of docs/compatibility.json (what the page shows)."""
    rows = []
    for m in data["models"]:
        steps = {k: dict(m[k]) for k in ("onnx_auto", "onnx_dynamo", "onnx_torchscript", "onnx_static",
                                          "torchscript") if k in m}
        if m.get("trace"):
            steps["trace"] = dict(m["trace"])
        nodes = m.get("nodes") or {}
        if nodes.get("stages") is not None:
            steps["nodes"] = {"ok": True, "stages": nodes["stages"], "random": nodes["random"]}
            steps["extractor"] = {"ok": True, "outputs": len(nodes["stages"]) + (1 if nodes["random"] else 0)}
        if m.get("params_m") is not None:
            steps["build"] = {"ok": True, "params_m": m["params_m"]}
        if m.get("input_shape"):
            steps["input"] = {"ok": True, "shape": m["input_shape"]}
        row = {k: m.get(k) for k in ("id", "group", "family", "spec", "kwargs", "input_shape", "note", "status",
                                     "all_ok", "category", "failure", "fix", "total_s", "peak_rss_mb")}
        rows.append({**row, "steps": steps})
    return rows


def test_matrix_page_and_json_are_reproduced_byte_for_byte(tmp_path):
    """The typed records, the table writer and the page template give back docs/compatibility.md and
    docs/compatibility.json exactly, from the results stored in the JSON."""
    stored_md = (ROOT / "docs" / "compatibility.md").read_text()
    stored_json = (ROOT / "docs" / "compatibility.json").read_text()
    data = json.loads(stored_json)
    python = re.search(r"; Python (\S+), ", stored_md).group(1)
    env = zoo.Environment(data["versions"], python, data["cpu_count"])
    meta = {k: data[k] for k in ("workers", "backend", "timeout_s", "models_set", "wall_s", "models_run", "note")
            if k in data}
    rows = [zoo.ModelResult.from_dict(r) for r in _rows_from_matrix_json(data)]
    text = zoo.write_matrix(rows, tmp_path / "c.md", tmp_path / "c.json", meta=meta, env=env)
    assert text == stored_md
    assert (tmp_path / "c.md").read_text() == stored_md
    assert (tmp_path / "c.json").read_text() == stored_json


def test_matrix_escapes_cells_and_lists_models_not_run(tmp_path):
    row = zoo.ModelResult("evil|name", "x:y", "test", "test", status=zoo.Status.FAIL, category=zoo.Category.OTHER,
                          failure="build: a | b\nc", total_s=1.0)
    pending = zoo.ModelResult("later", "x:z", "test", "test", status=zoo.Status.NOT_RUN)
    text = zoo.write_matrix([row, pending], tmp_path / "m.md", None, env=zoo.Environment({"torch": "0"}, "3", 1))
    assert "| evil\\|name |" in text and "build: a \\| b c" in text
    assert "| later |  |  |  | not run |" in text
    assert "| test | 1 (+1 not run) | **0** (0.0%) | 0 |" in text
    assert not (tmp_path / "m.json").exists()


def test_results_round_trip_and_old_rows_read(tmp_path):
    row = zoo.ModelResult("m", "x:y", "test", "test", pid=7, fixes=["leaf_modules=[Foo]"])
    row.steps["build"] = zoo.Step(ok=True, time_s=0.5, params_m=1.5)
    row.steps["input"] = zoo.Step(ok=False, error="RuntimeError: Invalid ranges", category=zoo.Category.DYNAMIC_SHAPE)
    zoo.summarize(row)
    assert (row.status, row.category, row.failure) == ("fail", "dynamic shape", "input: RuntimeError: Invalid ranges")
    stored = json.loads(json.dumps(row.to_dict()))
    assert stored["category"] == "dynamic shape" and stored["steps"]["input"]["category"] == "dynamic shape"
    assert "exc" not in stored["steps"]["input"] and "crashed_in" not in stored
    assert zoo.ModelResult.from_dict(stored) == row
    # a row as the sweep wrote it before the records were typed (an unknown key, a category it no longer has)
    old = {"id": "o", "spec": "s", "group": "g", "family": "f", "kwargs": {}, "note": "", "pid": 1,
           "steps": {"task": {"ok": False, "error": "hard time limit reached", "category": "timeout"},
                     "trace": {"ok": False, "error": "x", "category": "flaky", "_extra": 1}},
           "crashed_in": "input", "status": "fail", "category": "timeout", "gone_key": True}
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(old) + "\nnot json\n")
    read = zoo.read_results(results)["o"]
    assert read.steps["task"].category is zoo.Category.TIMEOUT and read.crashed_in == "input"
    assert read.steps["trace"].category is zoo.Category.OTHER
    assert zoo.recategorize(read).steps["trace"].category is zoo.Category.UNTRACEABLE


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
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    assert len(zoo.zoo_models("segmentation")) == len(segmentation)
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
    """FX would trace `if mask is not None:` with a Proxy for mask; fxexport fixes mask=None itself
    (issue 16), so the first attempt works and the row says which arguments were fixed."""
    entry = _entry(f"{HERE}:masked", id="masked", group="test").to_dict()
    row = zoo.run_model_task(entry, {"work_dir": str(tmp_path), "redirect": False, "timeout": 300})
    assert row.status == "ok", row.failure
    assert "concrete_args={'mask': None} (automatic)" in row.fix
    assert row.steps["nodes"].first_error is None


# --------------------------------------------------------------------------- command line


def test_cli_lists_the_models(capsys):
    from fxexport.cli import main

    assert main(["zoo", "--list", "--models", "smoke"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in out] == [m.id for m in zoo.zoo_models("smoke")]


def test_importing_the_cli_imports_no_sweep():
    """The CLI imports the sweep (and pebble, Ray) only when `fxexport zoo` runs; stages stay light."""
    code = ("import sys, fxexport.cli, fxexport.stages\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('ray', 'pebble', 'fxexport.zoo')))\n"
            "assert not bad, bad\n"
            "fxexport.cli.build_parser()\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('ray', 'pebble')))\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


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
    assert rows["tiny"].status == "ok", rows["tiny"].failure
    assert rows["tiny"].steps["onnx_auto"].verify_batches == [1, 3]
    assert rows["fault:crash"].category == "crash"
    assert rows["fault:crash"].crashed_in == "input"  # the Ray worker shares the work folder here


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
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})  # a call that will not return
        time.sleep(120)


class _Segfault(_Hang):
    def forward(self, x):
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV


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


def segfault():
    return _Segfault()


def tiny():
    return _Tiny()

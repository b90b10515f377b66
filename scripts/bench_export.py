"""Benchmark of the export layer: export cost per exporter, and what the flattening costs at run time.

Rows:
  * ``export``: wall time and peak RSS of one ``export_onnx`` (``dynamo`` / ``torchscript``
    exporter) or ``export_torchscript`` (``script``) call, each in its own subprocess so the
    peak RSS is that export's (``rss_delta_mib`` = peak minus the RSS before exporting, with the
    model and extractor already built). Models: resnet50 ``layer1..layer4`` and vit_b_16 with 3
    encoder layers (``encoder_layer_3/7/11``), 224x224, example batch 1, dynamic batch, seeded
    random weights. The time includes fxexport's checks (onnxruntime at two batch sizes).
  * ``phases``: where one ``export_onnx`` spends its time, beside a plain ``torch.onnx.export`` of the same
    extractor (resnet50 ``layer1..layer4``, 224x224, example batch 2, dynamic batch, TorchScript-based
    exporter, 2 threads). Both run in turn in interleaved blocks in this process (gaps between,
    order rotating); each phase (exporter, serialization, fix-up, node-map, checker, write, runtime session,
    runtime runs, eager runs, compare; marked in the library with :func:`fxexport._timing.phase`,
    collected with :func:`fxexport._timing.collect_phases`) is the median over blocks, ``vs_plain`` its
    fraction of the plain export's median. ``write`` is the wait for the file, which is written in a
    thread while it is checked (``background write``: that thread's time, overlapping the check and
    left out of the sum). ``other`` is the unmarked rest (plan, manifest, the rename, ...).
    Target: ``total`` <= 2.0x plain.
  * ``latency`` (also at 1 thread, as a contention indicator): resnet50 ``layer1..layer4`` at batch 1,
    2 threads: onnxruntime on the file ``export_onnx`` wrote (graph optimizations on) vs the eager
    torch extractor (target ratio <= 0.6) and vs a plain ``torch.onnx.export`` of the same extractor with the same
    exporter (target within 5%: the flattening must cost nothing at run time). Medians of
    interleaved blocks with gaps (:func:`bench_common.interleaved`), all in one process.

``--quick``: resnet18 at 64x64, no vit, fewer blocks. Run: ``python scripts/bench.py export [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
R50_NODES = {"layer1": "feat1", "layer2": "feat2", "layer3": "feat3", "layer4": "feat4"}
VIT_NODES = {f"encoder.layers.encoder_layer_{i}": f"enc{i}" for i in (3, 7, 11)}
EXPORTERS = ("onnx-dynamo", "onnx-torchscript", "torchscript-script")
COLUMNS = ("bench", "model", "exporter", "phase", "wall_s", "peak_rss_mib", "rss_delta_mib", "latency_ms",
           "vs_eager", "vs_plain", "note")


def _row(**kw) -> dict:
    return {c: kw.get(c) for c in COLUMNS}


def _build(model_name: str, quick: bool, batch: int = 1):
    import torch
    import torchvision

    from fxexport import create_feature_extractor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if model_name == "vit_b_16":
            model, nodes, size = torchvision.models.vit_b_16().eval(), VIT_NODES, 224
        elif quick:
            model, nodes, size = torchvision.models.resnet18().eval(), R50_NODES, 64
        else:
            model, nodes, size = torchvision.models.resnet50().eval(), R50_NODES, 224
    return create_feature_extractor(model, nodes), torch.rand(batch, 3, size, size)


def _child(model_name: str, exporter: str, out: str, quick: bool) -> None:
    """One export in this (fresh) process; prints a JSON line with its time and memory."""
    import torch

    from bench_common import peak_rss_mb
    from fxexport import export_onnx, export_torchscript

    torch.set_num_threads(2)
    extractor, x = _build(model_name, quick)
    rss_before = _current_rss_mb()
    t0 = time.perf_counter()
    if exporter.startswith("onnx-"):
        manifest = export_onnx(extractor, x, out, dynamic=("batch",), exporter=exporter[5:])
    else:
        manifest = export_torchscript(extractor, x, out, method=exporter.split("-")[1], dynamic=("batch",))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "peak_rss_mib": peak_rss_mb(), "rss_delta_mib": peak_rss_mb() - rss_before,
                      "size_mib": os.path.getsize(out) / 2**20, "used": manifest.exporter}))


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _export_rows(quick: bool, folder: Path) -> list[dict]:
    rows = []
    models = ["resnet18" if quick else "resnet50"] + ([] if quick else ["vit_b_16"])
    for model_name in models:
        for exporter in EXPORTERS:
            out = folder / f"{model_name}-{exporter}.{'onnx' if exporter.startswith('onnx') else 'pt'}"
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", model_name, exporter, str(out)]
                + (["--quick"] if quick else []),
                capture_output=True, text=True, cwd=ROOT,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                rows.append(_row(bench="export", model=model_name, exporter=exporter, note=f"FAILED: {err[:200]}"))
                continue
            r = json.loads(lines[-1])
            rows.append(_row(bench="export", model=model_name, exporter=exporter, wall_s=r["wall_s"],
                             peak_rss_mib=r["peak_rss_mib"], rss_delta_mib=r["rss_delta_mib"],
                             note=f"file {r['size_mib']:.0f} MiB"))
    return rows


def _session(path: Path, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _plain_export(extractor, x, path: Path, exporter: str) -> None:
    """What a user would write without fxexport: torch.onnx.export of the dict-returning extractor."""
    import torch
    from torch.export import Dim

    x2 = torch.cat([x, x])
    if exporter == "dynamo":
        torch.onnx.export(extractor, (x2,), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=({0: Dim("batch")},), verbose=False)
    else:
        # output_names is required here: without it torch's exporter trips over GraphModule.graph
        torch.onnx.export(extractor, (x2,), str(path), dynamo=False, input_names=["x"],
                          output_names=list(R50_NODES.values()), dynamic_axes={"x": {0: "batch"}})


#: the phases export_onnx marks (fxexport._timing.phase), in the order they happen
PHASES = ("eager runs", "exporter", "serialization", "fix-up", "node-map", "checker", "runtime session", "runtime runs",
          "compare", "write", "background write")


def _phase_rows(quick: bool, folder: Path) -> list[dict]:
    """export_onnx's phases beside a plain torch.onnx.export: interleaved blocks, medians."""
    import contextlib
    import io

    import torch

    from fxexport import export_onnx
    from fxexport._timing import collect_phases

    torch.set_num_threads(2)
    model_name = "resnet18" if quick else "resnet50"
    extractor, x = _build(model_name, quick, batch=2)
    ours_path, plain_path = folder / "phases-ours.onnx", folder / "phases-plain.onnx"

    def plain() -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(extractor, (x,), str(plain_path), dynamo=False, input_names=["x"],
                              output_names=list(R50_NODES.values()), dynamic_axes={"x": {0: "batch"}})
        return {}

    def ours() -> dict[str, float]:
        with collect_phases() as phases:
            export_onnx(extractor, x, ours_path, dynamic=("batch",), exporter="torchscript")
        return phases

    fns = {"plain": plain, "ours": ours}
    blocks = 3 if quick else 7
    for fn in fns.values():  # warm-up: first-call imports and allocations
        fn()
    totals: dict[str, list[float]] = {n: [] for n in fns}
    phases: list[dict[str, float]] = []
    names = list(fns)
    for b in range(blocks):
        for name in names[b % 2:] + names[: b % 2]:
            time.sleep(0.2)
            t0 = time.perf_counter()
            got = fns[name]()
            totals[name].append(time.perf_counter() - t0)
            if name == "ours":
                # the background write overlaps the check (it is the time of the write itself, not of the wait)
                marked = sum(v for k, v in got.items() if not k.startswith("background"))
                phases.append(dict(got, other=totals[name][-1] - marked))
    plain_s, ours_s = statistics.median(totals["plain"]), statistics.median(totals["ours"])
    label = "fxexport.export_onnx (torchscript)"
    note = f"example batch 2, dynamic batch, 2 threads; median of {blocks} interleaved blocks"
    rows = [_row(bench="phases", model=model_name, exporter="plain torch.onnx.export (torchscript)", phase="total",
                 wall_s=plain_s, vs_plain=1.0, note=note)]
    seen = [n for n in PHASES if any(n in ph for ph in phases)]
    seen += sorted({n for ph in phases for n in ph} - set(seen) - {"other"}) + ["other"]
    for name in seen:
        median = statistics.median(ph.get(name, 0.0) for ph in phases)
        rows.append(_row(bench="phases", model=model_name, exporter=label, phase=name, wall_s=median,
                         vs_plain=median / plain_s))
    rows.append(_row(bench="phases", model=model_name, exporter=label, phase="total", wall_s=ours_s,
                     vs_plain=ours_s / plain_s, note="target: vs_plain <= 2.0"))
    return rows


def _latency_rows(quick: bool, folder: Path) -> list[dict]:
    import contextlib
    import io

    import torch

    from bench_common import interleaved
    from fxexport import export_onnx

    torch.set_num_threads(2)
    model_name = "resnet18" if quick else "resnet50"
    extractor, x = _build(model_name, quick)
    feeds = {"x": x.numpy()}
    fns, notes = {}, {}

    def eager():
        with torch.inference_mode():
            return extractor(x)

    def eager_1():  # a contention indicator: one thread has no barriers to wait at
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return extractor(x)
        finally:
            torch.set_num_threads(2)

    fns["eager"] = eager
    fns["eager-1"] = eager_1
    for exporter in ("torchscript", "dynamo"):
        ours, plain = folder / f"ours-{exporter}.onnx", folder / f"plain-{exporter}.onnx"
        export_onnx(extractor, x, ours, dynamic=("batch",), exporter=exporter)
        with contextlib.redirect_stdout(io.StringIO()):
            _plain_export(extractor, x, plain, exporter)
        s_ours, s_plain = _session(ours), _session(plain)
        assert [o.name for o in s_ours.get_outputs()] == list(R50_NODES.values())
        import onnx

        same = [n.op_type for n in onnx.load(str(ours)).graph.node] == \
            [n.op_type for n in onnx.load(str(plain)).graph.node]
        notes[exporter] = (f"plain output names: {[o.name for o in s_plain.get_outputs()]}; "
                           f"same op sequence as fxexport's: {'yes' if same else 'NO'}")
        fns[f"ours-{exporter}"] = lambda s=s_ours: s.run(None, feeds)
        fns[f"plain-{exporter}"] = lambda s=s_plain: s.run(None, feeds)
        if exporter == "torchscript":
            one_thread = _session(ours, 1)
            fns["ours-1"] = lambda s=one_thread: s.run(None, feeds)
    blocks, reps = (5, 5) if quick else (9, 5)
    times = interleaved(fns, blocks=blocks, reps=reps, warmup=3, gap_s=0.1)
    eager_s = times["eager"]
    rows = [_row(bench="latency", model=model_name, exporter="eager torch", latency_ms=eager_s * 1e3, vs_eager=1.0,
                 note="batch 1, 2 threads")]
    for exporter in ("torchscript", "dynamo"):
        ours, plain = times[f"ours-{exporter}"], times[f"plain-{exporter}"]
        rows.append(_row(bench="latency", model=model_name, exporter=f"ort, plain torch.onnx.export ({exporter})",
                         latency_ms=plain * 1e3, vs_eager=plain / eager_s, vs_plain=1.0, note=notes[exporter]))
        rows.append(_row(bench="latency", model=model_name, exporter=f"ort, fxexport.export_onnx ({exporter})",
                         latency_ms=ours * 1e3, vs_eager=ours / eager_s, vs_plain=ours / plain,
                         note="targets: vs_eager <= 0.6, vs_plain within 5%"))
    rows.append(_row(bench="latency", model=model_name, exporter="eager torch, 1 thread",
                     latency_ms=times["eager-1"] * 1e3, vs_eager=times["eager-1"] / eager_s,
                     note="reference: if this beats 2 threads, the cores are contended"))
    rows.append(_row(bench="latency", model=model_name, exporter="ort, fxexport (torchscript), 1 thread",
                     latency_ms=times["ours-1"] * 1e3, vs_eager=times["ours-1"] / eager_s,
                     note=f"vs eager at 1 thread: {times['ours-1'] / times['eager-1']:.3f}"))
    return rows


def run(args) -> list[dict]:
    sys.path.insert(0, str(HERE))
    from bench_common import cpu_count

    quick = getattr(args, "quick", False)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        rows = _phase_rows(quick, folder)
        rows += _export_rows(quick, folder)
        rows += _latency_rows(quick, folder)
    load_after = os.getloadavg()
    rows.append(_row(bench="machine", note=f"{cpu_count()} cpus; load average {load[0]:.2f} before, "
                                          f"{load_after[0]:.2f} after"))
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) >= 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4], "--quick" in sys.argv)
    else:
        print(__doc__)

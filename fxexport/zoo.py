"""Compatibility sweep across the model zoos: which backbones trace, export and verify.

For every model in the sweep (:func:`zoo_models`) one task (:func:`run_model_task`) runs
in its own worker process: build the model with seeded random weights, trace it (node
count, time), pick the output of each stage plus one random tensor-valued node, build the
extractor, export it to ONNX with the exporter ``"auto"`` picks and with the other one and
to TorchScript, all with a dynamic batch, and verify every artifact at batch 1 and 3 (the
export example has batch 2). Each step records its time, and each artifact its max error;
a failure gets a category (:data:`CATEGORIES`), a one-line reason and, where the task could
find one, the fix that works (the ``leaf_modules=`` or the exporter to use).

Results are appended to a JSONL file as each model finishes; a re-run skips models that
already have a result. :func:`write_matrix` turns the results into ``docs/compatibility.md``
and the JSON behind it.

Backends (no scheduler of our own):

* ``local`` (default): :class:`concurrent.futures.ProcessPoolExecutor` with
  ``max_tasks_per_child=1`` on a ``forkserver`` context that preloads torch, so each model
  gets a fresh process without paying for the imports;
* ``ray``: the same task as a Ray remote function (``max_calls=1``, no retries), on a local
  Ray instance or an existing cluster (``--ray-address``).

A task enforces its own time limit: a soft one (``SIGALRM``: the step that ran out is
recorded as a ``timeout``) and a hard one (:func:`faulthandler.dump_traceback_later`
with ``exit=True``, for a hang inside C code). A worker that dies (crash, out of memory,
hard limit) is recorded as a ``crash`` with the step it was in, and the sweep goes on.

Example:
    >>> [m.id for m in zoo_models("smoke")][:2]
    ['torchvision:resnet18', 'torchvision:squeezenet1_1']
    >>> categorize("onnx", RuntimeError("Unsupported: ONNX export of operator aten::foo"))
    'unsupported op'
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import faulthandler
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = [
    "ZooModel",
    "CATEGORIES",
    "zoo_models",
    "run_model_task",
    "run_sweep",
    "read_results",
    "write_matrix",
    "categorize",
    "choose_nodes",
    "add_arguments",
    "main_from_args",
]

RESULTS_FILE = "build/zoo/results.jsonl"
MATRIX_FILE = "docs/compatibility.md"
MATRIX_JSON = "docs/compatibility.json"
DEFAULT_TIMEOUT = 300.0
#: seconds after the soft limit before a stuck worker is killed from inside (faulthandler)
HARD_GRACE = 60.0
#: the batch of the export example (dynamic dims are exported from a size >= 2) and the
#: batch sizes verified (both differ from it, so a batch baked in at export shows up)
EXPORT_BATCH = 2
VERIFY_BATCHES = (1, 3)
MAX_STAGES = 8
#: the time limit grows by this many seconds per million parameters (weights are serialized,
#: checked and loaded several times per model: vgg16 gets +69 s, vit_h_14 +316 s)
SECONDS_PER_MPARAM = 0.5

#: failure categories, in the order the matrix lists them
CATEGORIES = ("untraceable", "unsupported op", "dynamic shape", "mismatch", "timeout", "crash", "other")

GROUPS = (
    "torchvision classification",
    "torchvision segmentation",
    "torchvision detection backbone",
    "timm",
)


# ============================================================================ the models


@dataclass(frozen=True)
class ZooModel:
    """One row of the sweep.

    ``sizes`` are the input sizes (square) to try, smallest first: the task uses the first
    one the eager model runs on, so a model with a fixed input size falls back to its own.
    """

    id: str
    spec: str
    group: str
    family: str
    kwargs: dict = field(default_factory=dict, hash=False)
    sizes: tuple = (64,)
    note: str = ""
    #: this model's time limit in seconds (default: the sweep's ``--timeout``)
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooModel":
        data = dict(data)
        data["sizes"] = tuple(data.get("sizes") or (64,))
        return cls(**data)


_CONVNET_SIZE = 64


def _tv_family(name: str) -> str:
    for prefix in ("efficientnet_v2", "efficientnet", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y",
                   "resnext", "wide_resnet", "resnet", "shufflenet", "squeezenet", "swin_v2", "swin", "vgg", "vit",
                   "convnext", "densenet", "mnasnet", "maxvit", "inception", "googlenet", "alexnet"):
        if name.startswith(prefix):
            return prefix
    return name


def torchvision_classification_models() -> list[ZooModel]:
    """Every torchvision classification model, with the input size the sweep uses."""
    import torchvision

    rows = []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        kwargs: dict[str, Any] = {}
        sizes: tuple = (_CONVNET_SIZE,)
        note = ""
        if name.startswith("vit_"):
            patch = int(re.search(r"_(\d+)$", name).group(1))
            size = 112 if 112 % patch == 0 else 128
            kwargs = {"image_size": size}
            sizes = (size,)
            note = f"image_size={size} (builder kwarg; default 224)"
        elif name == "maxvit_t":
            sizes = (224,)
            note = "fixed 224 (window partitions)"
        elif name.startswith("swin"):
            sizes = (112,)
        elif name == "inception_v3":
            sizes = (96,)
            kwargs = {"init_weights": True}
        elif name == "googlenet":
            kwargs = {"init_weights": True}
        rows.append(ZooModel(f"torchvision:{name}", f"torchvision:{name}", GROUPS[0], _tv_family(name),
                             kwargs, sizes, note))
    return rows


def torchvision_segmentation_models() -> list[ZooModel]:
    import torchvision

    return [ZooModel(f"torchvision:{name}", f"torchvision:{name}", GROUPS[1], name.split("_", 1)[0], {}, (128,))
            for name in sorted(torchvision.models.list_models(module=torchvision.models.segmentation))]


_BACKBONE_UTILS = "torchvision.models.detection.backbone_utils"


def torchvision_detection_backbones() -> list[ZooModel]:
    rows = []
    for backbone in ("resnet18", "resnet50"):
        rows.append(ZooModel(
            f"resnet_fpn_backbone({backbone})", f"{_BACKBONE_UTILS}:resnet_fpn_backbone", GROUPS[2],
            "resnet_fpn_backbone", {"backbone_name": backbone, "weights": None, "trainable_layers": 5}, (128,)))
    for backbone in ("mobilenet_v3_small", "mobilenet_v3_large"):
        rows.append(ZooModel(
            f"mobilenet_backbone({backbone}, fpn)", f"{_BACKBONE_UTILS}:mobilenet_backbone", GROUPS[2],
            "mobilenet_backbone", {"backbone_name": backbone, "weights": None, "fpn": True, "trainable_layers": 6},
            (128,)))
    return rows


#: timm backbones: the smallest variant of each family (name, family)
TIMM_MODELS: tuple[tuple[str, str], ...] = (
    ("resnet18", "resnet"),
    ("resnext26ts", "resnext"),
    ("res2net50_26w_4s", "res2net"),
    ("resnest14d", "resnest"),
    ("efficientnet_b0", "efficientnet"),
    ("efficientnetv2_rw_t", "efficientnetv2"),
    ("mobilenetv3_small_050", "mobilenetv3"),
    ("mobilenetv4_conv_small", "mobilenetv4"),
    ("convnext_atto", "convnext"),
    ("convnextv2_atto", "convnextv2"),
    ("regnetx_002", "regnet"),
    ("regnety_002", "regnet"),
    ("densenet121", "densenet"),
    ("repvgg_a0", "repvgg"),
    ("ghostnet_050", "ghostnet"),
    ("ghostnetv2_100", "ghostnet"),
    ("nf_regnet_b0", "nfnet"),
    ("eca_nfnet_l0", "nfnet"),
    ("mixnet_s", "mixnet"),
    ("lcnet_050", "lcnet"),
    ("hrnet_w18_small", "hrnet"),
    ("dla34", "dla"),
    ("cspresnet50", "cspnet"),
    ("ese_vovnet19b_slim", "vovnet"),
    ("rexnet_100", "rexnet"),
    ("inception_v3", "inception"),
    ("hgnetv2_b0", "hgnet"),
    ("fastvit_t8", "fastvit"),
    ("repvit_m0_9", "repvit"),
    ("mobileone_s0", "mobileone"),
    ("efficientvit_b0", "efficientvit"),
    ("edgenext_xx_small", "edgenext"),
    ("mobilevit_xxs", "mobilevit"),
    ("poolformerv2_s12", "metaformer"),
    ("botnet26t_256", "byoanet"),
    ("vit_tiny_patch16_224", "vit"),
    ("deit_tiny_patch16_224", "deit"),
    ("eva02_tiny_patch14_224", "eva"),
    ("swin_tiny_patch4_window7_224", "swin"),
    ("swinv2_cr_tiny_ns_224", "swinv2"),
    ("maxvit_rmlp_pico_rw_256", "maxvit"),
    ("coatnet_nano_rw_224", "coatnet"),
    ("levit_128s", "levit"),
    ("coat_lite_tiny", "coat"),
    ("pvt_v2_b0", "pvt_v2"),
    ("xcit_nano_12_p16_224", "xcit"),
    ("tiny_vit_5m_224", "tiny_vit"),
    ("efficientformerv2_s0", "efficientformer"),
    ("davit_tiny", "davit"),
    ("hiera_tiny_224", "hiera"),
    ("cait_xxs24_224", "cait"),
    ("crossvit_tiny_240", "crossvit"),
    ("mvitv2_tiny", "mvitv2"),
    ("mixer_s16_224", "mlp-mixer"),
    ("sequencer2d_s", "sequencer"),
)


def timm_models() -> list[ZooModel]:
    """The timm set: 64 px first, the model's own input size when it does not run at 64."""
    return [ZooModel(f"timm:{name}", f"timm:{name}", GROUPS[3], family, {}, (_CONVNET_SIZE, 0))
            for name, family in TIMM_MODELS]


#: five quick models for the smoke test (one per kind of task the sweep runs)
SMOKE = ("torchvision:resnet18", "torchvision:squeezenet1_1", "models/multitask.py:build",
         "timm:test_vit", "models/needs_leaf.py:build")


def zoo_models(which: str = "all") -> list[ZooModel]:
    """The sweep's models: ``all``, ``torchvision``, ``classification``, ``segmentation``,
    ``detection``, ``timm`` or ``smoke`` (five quick models, for tests)."""
    if which == "smoke":
        return [
            ZooModel(SMOKE[0], SMOKE[0], GROUPS[0], "resnet", {}, (32,)),
            ZooModel(SMOKE[1], SMOKE[1], GROUPS[0], "squeezenet", {}, (48,)),
            ZooModel(SMOKE[2], SMOKE[2], "example", "multitask", {}, (0,)),
            ZooModel(SMOKE[3], SMOKE[3], GROUPS[3], "vit", {}, (0,)),
            ZooModel(SMOKE[4], SMOKE[4], "example", "needs_leaf", {}, (0,)),
        ]
    parts = {
        "classification": torchvision_classification_models,
        "segmentation": torchvision_segmentation_models,
        "detection": torchvision_detection_backbones,
        "timm": timm_models,
    }
    if which == "all":
        keys = list(parts)
    elif which == "torchvision":
        keys = ["classification", "segmentation", "detection"]
    elif which in parts:
        keys = [which]
    else:
        raise ValueError(f"unknown model set {which!r}; expected all, torchvision, classification, "
                         "segmentation, detection, timm or smoke")
    return [m for key in keys for m in parts[key]()]


# ============================================================================ node choice

_BODY_NAMES = {"features", "encoder", "layers", "trunk_output", "backbone", "body", "fpn", "blocks", "stages"}


def stage_prefixes(model) -> list[str]:
    """Module paths of a model's top-level stages.

    Top-level children, with the main body (``features``, ``encoder``, ``layers``,
    ``trunk_output``, ``backbone``, ``body``, ``fpn``, ``blocks``, ``stages``) opened
    up to two levels.
    """
    out: list[str] = []

    def visit(prefix: str, module, depth: int) -> None:
        for name, child in module.named_children():
            path = prefix + name
            grand = list(child.named_children())
            if depth < 2 and name in _BODY_NAMES and len(grand) >= 3:
                visit(path + ".", child, depth + 1)
            else:
                out.append(path)

    visit("", model, 0)
    return out


def timm_feature_modules(model) -> list[str]:
    """timm's ``feature_info`` module paths, when the model has them."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "module_name"):  # a timm FeatureInfo object
        try:
            return list(info.module_name())
        except Exception:  # noqa: BLE001
            return []
    if isinstance(info, (list, tuple)):
        return [i["module"] for i in info if isinstance(i, dict) and i.get("module")]
    return []


def _resolve(prefix: str, names: Sequence[str]) -> str | None:
    """The node a return-node query selects: itself, else the last node inside it."""
    if prefix in names:
        return prefix
    inside = [n for n in names if n.startswith(prefix + ".")]
    return inside[-1] if inside else None


def _is_tensor_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) for d in shape)


def _is_tensors(shape: Any) -> bool:
    """A tensor, or a tuple/list/dict of tensors (what the flatten layer names)."""
    if _is_tensor_shape(shape):
        return True
    if isinstance(shape, list) and shape:
        return all(_is_tensor_shape(s) for s in shape)
    if isinstance(shape, dict) and shape:
        return all(_is_tensor_shape(s) for s in shape.values())
    return False


def _thin(stages: list[str], shapes: dict[str, Any], limit: int = MAX_STAGES) -> list[str]:
    """At most ``limit`` stages: the last node before each change of spatial size, else evenly spaced."""
    if len(stages) <= limit:
        return stages

    def spatial(name):
        s = shapes.get(name)
        return tuple(s[-2:]) if _is_tensor_shape(s) and len(s) == 4 else ("other", len(s) if isinstance(s, list) else 0)

    kept = [s for i, s in enumerate(stages) if i == len(stages) - 1 or spatial(s) != spatial(stages[i + 1])]
    if min(4, limit) <= len(kept) <= limit:
        return kept
    step = (len(stages) - 1) / (limit - 1)
    return [stages[round(i * step)] for i in range(limit)]


def choose_nodes(model, infos, train_names: Sequence[str], eval_names: Sequence[str], seed_text: str
                 ) -> tuple[list[str], str | None, list[str]]:
    """(stage nodes, one random tensor-valued node, notes).

    Stage nodes come from timm's ``feature_info`` when the model has one, else from
    :func:`stage_prefixes`; each resolves to a node present in both the train and eval
    graphs whose value is a tensor (or tensors). The random node is drawn, seeded by
    ``seed_text``, from the other tensor-valued nodes.
    """
    both = set(train_names) & set(eval_names)
    shapes = {i.name: i.shape for i in infos}
    notes: list[str] = []
    prefixes = timm_feature_modules(model)
    source = "feature_info" if prefixes else "stages"
    if prefixes and not any(_resolve(p, eval_names) for p in prefixes):
        notes.append(f"feature_info modules {prefixes[:3]}... name no module of the graph: using the stages")
        prefixes, source = [], "stages"
    if not prefixes:
        prefixes = stage_prefixes(model)
    stages: list[str] = []
    for prefix in prefixes:
        node = _resolve(prefix, eval_names)
        if node is None or node not in both:
            notes.append(f"{source} '{prefix}' has no node in both graphs")
            continue
        if not _is_tensors(shapes.get(node)):
            notes.append(f"stage '{prefix}' ({node}) is not a tensor")
            continue
        if node not in stages:
            stages.append(node)
    stages = _thin(stages, shapes)
    pool = [i.name for i in infos
            if i.kind not in ("placeholder", "output", "get_attr") and i.name in both
            and _is_tensor_shape(i.shape) and i.name not in stages]
    pick = random.Random(zlib.crc32(seed_text.encode())).choice(pool) if pool else None
    return stages, pick, notes


# ============================================================================ failures

_PATTERNS: tuple[tuple[str, str], ...] = (
    # torch.export cannot follow control flow on tensor values (what FX calls untraceable)
    ("untraceable", r"GuardOnDataDependent|[Dd]ata.dependent|[Dd]ynamic control flow|"
                    r"symbolically traced variables cannot be used as inputs to control flow"),
    ("dynamic shape", r"Invalid ranges|[Cc]onstraints? violated|guard|specializ|dynamic dim|"
                      r"[Dd]ynamic shape|symbolic|SymInt|not (truly )?dynamic|fixed (batch|size)|Dim\(|"
                      r"batch.*(baked|static)|static.*batch|shape mismatch at|dynamic_shapes|"
                      r"\*s\d+\b|\bs\d+\*|Cannot view a tensor with shape"),
    ("unsupported op", r"[Uu]nsupported|not supported|only \S+ .{0,60}\b(is|are) supported|No decomposition|not implemented|NotImplemented|"
                       r"Exporting the operator|could not find an implementation|no symbolic|"
                       r"aten::\w+.* not|is not a registered|UnsupportedOperator|missing.*(op|kernel)"),
)


def categorize(step: str, err: Any) -> str:
    """A failure category from the step and the error (exception or text).

    Example:
        >>> categorize("trace", "TraceError: cannot trace Net")
        'untraceable'
        >>> categorize("onnx", "Invalid ranges [2:1]")
        'dynamic shape'
    """
    name = type(err).__name__ if isinstance(err, BaseException) else ""
    text = f"{name}: {err}"
    if name == "ZooTimeout" or step == "timeout":
        return "timeout"
    if name == "TraceError" or step in ("trace",):
        return "untraceable"
    for category, pattern in _PATTERNS:
        if re.search(pattern, text):
            return category
    if step.startswith("verify"):
        return "mismatch"
    return "other"


def _first_line(err: Any, limit: int = 240) -> str:
    """One line for an error: its most telling line, plus the root cause's when it is chained."""
    if isinstance(err, BaseException):
        root = err
        while root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__
        if root is not err and "(cause: " not in str(err):
            outer = _one(err, limit)
            inner = _one(root, limit)
            line = f"{outer} (cause: {inner})"
            return line if len(line) <= limit else (outer[: limit // 3] + "... (cause: " + inner)[: limit - 4] + "...)"
    return _one(err, limit)


def _one(err: Any, limit: int) -> str:
    text = str(err).strip()
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # torch's exporters put the useful line after a generic header; prefer a line naming an op / error
    pick = lines[0] if lines else ""
    for ln in lines[:40]:
        if re.search(r"[Uu]nsupported|not supported|Error:|error:|Invalid|guard|aten::", ln) and len(ln) > 20:
            pick = ln
            break
    name = type(err).__name__ if isinstance(err, BaseException) else ""
    line = f"{name}: {pick}" if name and not pick.startswith(name) else pick
    line = " ".join(line.split())
    if len(line) > limit and " (cause: " in line:  # keep the cause, shorten the generic head
        head, _, cause = line.partition(" (cause: ")
        line = head[: max(40, limit - len(cause) - 16)].rstrip() + "... (cause: " + cause
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ============================================================================ the task


class ZooTimeout(BaseException):
    """Raised in a worker when its model's soft time limit is reached (not an Exception,
    so library code that catches Exception does not swallow it)."""


@contextlib.contextmanager
def _deadline(seconds: float | None, log_file=None, grace: float = HARD_GRACE) -> Iterator[None]:
    """Soft limit (SIGALRM -> ZooTimeout) and hard limit (faulthandler exits the process)."""
    if not seconds or seconds <= 0:
        yield
        return
    armed = False

    def _raise(signum, frame):  # noqa: ARG001
        raise ZooTimeout(f"time limit of {seconds:.0f} s reached")

    try:
        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        armed = True
    except (ValueError, OSError):  # not the main thread (some Ray setups): hard limit only
        previous = None
    try:
        faulthandler.dump_traceback_later(seconds + grace, exit=True, file=log_file or sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _extend_deadline(extra: float, base: float, grace: float = HARD_GRACE) -> None:
    """Push the soft and hard limits back by ``extra`` seconds (after the model is built)."""
    with contextlib.suppress(Exception):
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, remaining + extra)
            faulthandler.cancel_dump_traceback_later()
            faulthandler.dump_traceback_later(remaining + extra + grace, exit=True)


class _Steps:
    """Records each step's time, outcome and error; writes the current step to a breadcrumb file."""

    def __init__(self, result: dict[str, Any], breadcrumb: Path | None):
        self.result = result
        self.breadcrumb = breadcrumb
        self.current = "start"

    @contextlib.contextmanager
    def __call__(self, name: str, **extra) -> Iterator[dict[str, Any]]:
        rec: dict[str, Any] = {"ok": False, **extra}
        self.result["steps"][name] = rec
        self.current = name
        if self.breadcrumb is not None:
            with contextlib.suppress(OSError):
                self.breadcrumb.write_text(name)
        t0 = time.perf_counter()
        try:
            yield rec
            rec["ok"] = True
        except ZooTimeout:
            rec["error"] = f"timeout during {name}"
            rec["category"] = "timeout"
            raise
        except Exception as err:  # noqa: BLE001 - every failure becomes a row
            rec["error"] = _first_line(err)
            rec["category"] = categorize(name, err)
            rec["_exc"] = err
        finally:
            rec["time_s"] = round(time.perf_counter() - t0, 3)


def _max_abs(report, artifact: Path | None = None) -> float | None:
    values = [c.max_abs for c in report.checks
              if c.max_abs is not None and (artifact is None or Path(c.artifact).name == artifact.name)]
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(finite) if finite else (math.inf if values else None)


def _verify_into(rec: dict[str, Any], path: Path, extractor, sizes=VERIFY_BATCHES) -> None:
    """Verify one artifact at the given batch sizes; fill ``rec`` (raises nothing)."""
    from fxexport.verify import verify

    t0 = time.perf_counter()
    try:
        report = verify(path, extractor, n_inputs=len(sizes), sizes={"batch": list(sizes)}, seed=0)
    except Exception as err:  # noqa: BLE001
        rec.update(verify_ok=False, verify_error=_first_line(err), verify_category=categorize("verify", err))
    else:
        rec["verify_ok"] = bool(report.ok)
        rec["verify_batches"] = [s[0][0] for s in report.inputs if s and s[0]]
        rec["max_abs"] = _json_float(_max_abs(report))
        ratios = [c.worst_ratio for c in report.checks if c.worst_ratio is not None]
        if ratios:  # max |out-ref| / (atol + rtol*|ref|): 1.0 is the edge of the tolerance
            rec["tol_used"] = _json_float(round(max(ratios), 4))
        if not report.ok:
            worst = report.failures[0] if report.failures else None
            text = report.summary()
            rec["verify_error"] = " ".join(text.split())[:300]
            problems = " ".join(" ".join(c.problems) for c in report.failures)
            shape_only = worst is not None and all(
                any("shape" in p for p in c.problems) for c in report.failures)
            rec["verify_category"] = "dynamic shape" if shape_only or "shape" in problems.split("; ")[0] else "mismatch"
    rec["verify_s"] = round(time.perf_counter() - t0, 3)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _leaf_from_error(text: str) -> str | None:
    m = re.search(r"leaf_modules=\[([A-Za-z_][\w.]*)\]", text)
    return m.group(1) if m else None


def _redirect_output(log_path: Path | None):
    """Send this worker's stdout/stderr (exporter chatter) to a log file."""
    if log_path is None:
        return None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the worker
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    return fh


def _exit_with_sweep(pid: int, period: float = 2.0) -> None:
    """End this worker when the sweep process is gone (a killed sweep must not leave exports running;
    the forkserver between them outlives the sweep while it has children)."""
    import threading

    def watch():
        while True:
            time.sleep(period)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(3)
            except OSError:
                pass

    threading.Thread(target=watch, name="zoo-parent-watch", daemon=True).start()


def run_model_task(entry: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one model through the whole pipeline; return its result row (never raises).

    ``entry`` is :meth:`ZooModel.to_dict`; ``options``: ``timeout`` (s), ``threads``,
    ``work_dir`` (for artifacts, logs and breadcrumbs), ``fixes`` (try fixes for failures,
    default True).
    """
    options = dict(options or {})
    if options.get("sweep_pid"):
        _exit_with_sweep(int(options["sweep_pid"]))
    model = ZooModel.from_dict(entry)
    work = Path(options.get("work_dir") or tempfile.gettempdir()) / "zoo"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.id).strip("_")
    log_fh = _redirect_output(work / "logs" / f"{safe}.log") if options.get("redirect", True) else None
    breadcrumb = work / "running" / f"{safe}.step"
    with contextlib.suppress(OSError):
        breadcrumb.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "id": model.id, "spec": model.spec, "group": model.group, "family": model.family,
        "kwargs": model.kwargs, "note": model.note, "steps": {}, "pid": os.getpid(),
    }
    t_start = time.perf_counter()
    steps = _Steps(result, breadcrumb)
    try:
        if model.timeout:
            options["timeout"] = model.timeout
        with _deadline(options.get("timeout", DEFAULT_TIMEOUT), log_fh,
                       float(options.get("hard_grace", HARD_GRACE))):
            _pipeline(model, options, result, steps, work / "artifacts" / f"{safe}-{os.getpid()}")
    except ZooTimeout:
        result["timed_out_in"] = steps.current
    except BaseException as err:  # noqa: BLE001 - a row, whatever happens
        if isinstance(err, KeyboardInterrupt):
            raise
        result["steps"].setdefault("task", {"ok": False})
        result["steps"]["task"].update(error=_first_line(err), category=categorize(steps.current, err))
    finally:
        with contextlib.suppress(OSError):
            breadcrumb.unlink()
    result["total_s"] = round(time.perf_counter() - t_start, 3)
    with contextlib.suppress(Exception):
        import resource

        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for rec in result["steps"].values():
        rec.pop("_exc", None)
    summarize(result)
    result["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if log_fh is not None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return result


def _pipeline(model_entry: ZooModel, options: dict[str, Any], result: dict[str, Any], step: _Steps,
              art_dir: Path) -> None:
    import shutil

    import torch

    from fxexport.describe import describe_nodes
    from fxexport.extractor import create_feature_extractor, get_graph_node_names
    from fxexport.models import default_input_shape, load_model, model_info, resolve_leaf_modules

    warnings.simplefilter("ignore")
    threads = int(options.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    fixes = options.get("fixes", True)
    steps = result["steps"]
    result["versions"] = {"torch": torch.__version__.split("+")[0]}

    # -- build
    with step("build") as rec:
        model = load_model(model_entry.spec, kwargs=model_entry.kwargs, seed=0)
        rec["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    if not steps["build"]["ok"]:
        return
    extra = SECONDS_PER_MPARAM * steps["build"]["params_m"]
    if options.get("timeout") and extra > 0:  # big models serialize and load their weights many times
        _extend_deadline(extra, float(options["timeout"]), float(options.get("hard_grace", HARD_GRACE)))
        result["time_limit_s"] = round(float(options["timeout"]) + extra)

    # -- input size: the first size the eager model runs on (0 = the model's own)
    own = default_input_shape(model)
    with step("input") as rec:
        tried = []
        x = None
        for size in model_entry.sizes:
            shape = (EXPORT_BATCH, *own[1:]) if size == 0 else (EXPORT_BATCH, own[1], size, size)
            candidate = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            try:
                with torch.no_grad():
                    model(candidate)
            except Exception as err:  # noqa: BLE001
                tried.append(f"{'x'.join(map(str, shape[2:]))}: {_first_line(err, 120)}")
                continue
            x = candidate
            break
        if x is None:
            raise RuntimeError("the model runs on none of the input sizes tried: " + "; ".join(tried))
        rec["shape"] = list(x.shape)
        if tried:
            rec["note"] = f"{len(tried)} smaller size(s) rejected by the model"
    if x is None:
        return
    result["input_shape"] = list(x.shape)

    # -- trace (node names, both modes), with leaf_modules fixes
    leaf_names: list[str] = []
    leaves: list[type] = []
    concrete: dict[str, Any] | None = None

    def trace_step():
        nonlocal leaves
        for _ in range(4):
            with step("trace") as rec:
                names = get_graph_node_names(model, suppress_diff_warning=True, leaf_modules=leaves or None,
                                             concrete_args=concrete)
                rec["nodes_train"], rec["nodes_eval"] = len(names[0]), len(names[1])
            if steps["trace"]["ok"]:
                return names
            if not fixes:
                return None
            leaf = _leaf_from_error(str(steps["trace"].get("_exc") or steps["trace"].get("error", "")))
            if not leaf or leaf in leaf_names:
                return None
            try:
                leaves = resolve_leaf_modules(model, leaf_names + [leaf])
            except Exception:  # noqa: BLE001
                return None
            result.setdefault("trace_failure", steps["trace"].get("error"))
            leaf_names.append(leaf)
        return None

    def nodes_step(names):
        with step("nodes") as rec:
            infos = describe_nodes(model, x[:1], mode="eval", leaf_modules=leaves or None, concrete_args=concrete)
            stages, pick, notes = choose_nodes(model, infos, names[0], names[1], model_entry.id)
            chosen = list(stages) + ([pick] if pick else [])
            if not chosen:
                raise RuntimeError("no tensor-valued node found in both the train and eval graphs")
            rec.update(stages=stages, random=pick)
            if notes:
                rec["notes"] = notes[:5]
            return chosen
        return None

    names = trace_step()
    if leaf_names:
        steps["trace"]["leaf_modules"] = leaf_names
        if steps["trace"]["ok"]:
            result.setdefault("fixes", []).append(f"leaf_modules=[{', '.join(leaf_names)}]")
    if names is None:
        return

    # -- nodes: each stage's output + one random tensor-valued node (runs the traced graph once)
    nodes = nodes_step(names)
    optional = _optional_forward_args(model)
    if nodes is None and fixes and optional:
        # FX traces `if mask is not None:` with a Proxy for mask, i.e. the branch for a given mask;
        # fixing the optional arguments to their defaults traces the path a plain call takes.
        first = steps["nodes"].get("error")
        concrete = optional
        names = trace_step()
        nodes = nodes_step(names) if names is not None else None
        if nodes is not None:
            steps["nodes"]["first_error"] = first
            result.setdefault("fixes", []).append(
                "concrete_args={" + ", ".join(f"'{k}': {v!r}" for k, v in optional.items()) + "}")
    if nodes is None:
        rec = steps["nodes"]
        if "running" in str(rec.get("error", "")):  # the traced graph does not run: the trace is wrong
            rec["category"] = "untraceable"
        return
    info = model_info(model_entry.spec, kwargs=model_entry.kwargs, seed=0, leaf_modules=leaf_names or None)

    # -- extractor (+ one eager run)
    with step("extractor") as rec:
        extractor = create_feature_extractor(model, {n: n for n in nodes}, suppress_diff_warning=True,
                                             leaf_modules=leaves or None, concrete_args=concrete).eval()
        with torch.no_grad():
            out = extractor(x)
        rec["outputs"] = len(out)
    if not steps["extractor"]["ok"]:
        return

    import fxexport

    art_dir.mkdir(parents=True, exist_ok=True)
    try:
        # -- ONNX: the exporter auto picks, then the other one (both when auto fails)
        def onnx_step(name: str, exporter: str, dynamic=("batch",), sizes=VERIFY_BATCHES) -> dict[str, Any]:
            path = art_dir / f"{name}.onnx"
            with step(name, exporter=exporter) as rec:
                manifest = fxexport.export_onnx(extractor, (x,), path, dynamic=dynamic, exporter=exporter,
                                                model_info=info)
                rec["exporter"] = manifest.exporter
            rec["export_s"] = rec["time_s"]
            if rec["ok"]:
                _verify_into(rec, path, extractor, sizes)
                if not rec.get("verify_ok"):
                    rec["category"] = rec.get("verify_category", "mismatch")
            for p in art_dir.glob(f"{name}.onnx*"):
                p.unlink()
            return rec

        auto = onnx_step("onnx_auto", "auto")
        if auto["ok"] and auto.get("exporter") in ("dynamo", "torchscript"):
            others = ["torchscript" if auto["exporter"] == "dynamo" else "dynamo"]
        else:
            others = ["dynamo", "torchscript"]
        for exporter in others:
            onnx_step(f"onnx_{exporter}", exporter)

        # -- TorchScript
        ts_path = art_dir / "extractor.pt"
        with step("torchscript") as rec:
            manifest = fxexport.export_torchscript(extractor, (x,), ts_path, dynamic=("batch",), model_info=info)
            rec["method"] = manifest.exporter
        if steps["torchscript"]["ok"]:
            _verify_into(steps["torchscript"], ts_path, extractor)
        ts_path.unlink(missing_ok=True)

        # -- fixes for a failed auto export
        if fixes and not _onnx_ok(auto):
            working = [e for e in ("torchscript", "dynamo") if _onnx_ok(steps.get(f"onnx_{e}", {}))]
            if working:
                result.setdefault("fixes", []).append(f"exporter='{working[0]}' (--exporter {working[0]})")
            elif auto.get("category") == "dynamic shape" or any(
                    steps.get(f"onnx_{e}", {}).get("category") == "dynamic shape" for e in ("dynamo", "torchscript")):
                static = onnx_step("onnx_static", "auto", dynamic=None, sizes=(EXPORT_BATCH,))
                if _onnx_ok(static):
                    result.setdefault("fixes", []).append(
                        "export with a static batch (dynamic=None; no --dynamic) at the batch you run")
    finally:
        shutil.rmtree(art_dir, ignore_errors=True)


def _optional_forward_args(model) -> dict[str, Any]:
    """Keyword arguments of ``model.forward`` after the first, with a default of None/bool."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    out = {}
    for p in params[1:]:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty and (
                p.default is None or isinstance(p.default, bool)):
            out[p.name] = p.default
    return out


def _onnx_ok(rec: dict[str, Any]) -> bool:
    return bool(rec.get("ok") and rec.get("verify_ok"))


#: the steps of the headline path, in order
_HEADLINE = ("build", "input", "trace", "nodes", "extractor", "onnx_auto")


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Set ``status`` (ok / fail), ``all_ok``, ``category``, ``failure`` (one line) on a row.

    A row is ok when the auto-chosen ONNX export with a dynamic batch verifies at two
    batch sizes. ``failure`` names the first failing step of the headline path, or for an
    ok row the other steps that failed (dynamo / torchscript / TorchScript).
    """
    steps = result.get("steps", {})
    timed_out = result.get("timed_out_in")
    headline_ok = all(steps.get(s, {}).get("ok") for s in _HEADLINE) and bool(steps.get("onnx_auto", {}).get("verify_ok"))
    result["status"] = "ok" if headline_ok else "fail"
    others = [s for s in ("onnx_dynamo", "onnx_torchscript", "torchscript") if s in steps]
    result["all_ok"] = headline_ok and all(
        steps[s].get("ok") and steps[s].get("verify_ok") for s in others)
    lines = []
    category = None
    if not headline_ok:
        for s in _HEADLINE:
            rec = steps.get(s)
            if rec is None:  # the task stopped before this step
                task = steps.get("task")
                if task is not None:
                    category = task.get("category") or "other"
                    lines.append(f"{task.get('error') or 'failed'}")
                elif timed_out:
                    category = "timeout"
                    lines.append(f"timeout in {timed_out}")
                else:
                    category = "other"
                    lines.append(f"stopped before {s}")
                break
            if not rec.get("ok") or (s == "onnx_auto" and not rec.get("verify_ok")):
                category = rec.get("category") or ("timeout" if timed_out else "other")
                msg = rec.get("error") or rec.get("verify_error") or "failed"
                lines.append(f"{s}: {msg}")
                break
        if timed_out and category != "timeout":
            category = "timeout"
            lines.insert(0, f"timeout in {timed_out}")
    else:
        for s in others:
            rec = steps[s]
            if not (rec.get("ok") and rec.get("verify_ok")):
                cat = rec.get("category") or rec.get("verify_category") or "other"
                lines.append(f"{s} [{cat}]: {rec.get('error') or rec.get('verify_error') or 'failed'}")
        if timed_out:
            lines.append(f"timeout in {timed_out}")
    result["category"] = category
    result["failure"] = " | ".join(lines)[:400] if lines else None
    fixes = list(result.get("fixes") or [])
    default = _default_fix(result) if category or lines else None
    if default and default not in fixes:
        fixes.append(default)
    result["fix"] = "; ".join(fixes) or None
    return result


def _default_fix(result: dict[str, Any]) -> str | None:
    category = result.get("category")
    steps = result.get("steps", {})
    if category == "timeout":
        return "raise the limit (--timeout) or use a smaller input"
    if category == "crash":
        return "run it alone with more memory"
    if category is None:  # headline ok, another step failed
        failed = [s for s in ("onnx_dynamo", "onnx_torchscript") if s in steps and not _onnx_ok(steps[s])]
        if failed and "onnx_auto" in steps:
            fix = f"use exporter='{steps['onnx_auto'].get('exporter')}' (what auto picks)"
            if any("not factor of input size" in (steps[s].get("error") or "") for s in failed):
                fix += ("; the torchscript exporter needs the feature map at the adaptive pool to be a multiple "
                        "of its output size (e.g. a 224 px input)")
            return fix
        return None
    return None


# ============================================================================ results


def recategorize(row: dict[str, Any]) -> dict[str, Any]:
    """Recompute the categories of a stored row from its error lines (after the rules improve)."""
    for name, rec in row.get("steps", {}).items():
        if rec.get("ok") is False and rec.get("error") and rec.get("category") not in ("timeout", "crash"):
            rec["category"] = categorize(name, rec["error"])
    return summarize(row)


def read_results(path: str | os.PathLike) -> "OrderedDict[str, dict[str, Any]]":
    """The latest result per model id from a JSONL file (bad lines are skipped)."""
    rows: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    p = Path(path)
    if not p.is_file():
        return rows
    with p.open() as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("id"):
                rows.pop(row["id"], None)
                rows[row["id"]] = row
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _crash_row(model: ZooModel, why: str, work_dir: Path, elapsed: float) -> dict[str, Any]:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.id).strip("_")
    crumb = work_dir / "zoo" / "running" / f"{safe}.step"
    where = ""
    with contextlib.suppress(OSError):
        where = crumb.read_text().strip()
        crumb.unlink()
    hard_timeout = "timeout" in why
    log = work_dir / "zoo" / "logs" / f"{safe}.log"
    with contextlib.suppress(OSError):
        with log.open("rb") as fh:  # faulthandler's hard limit writes "Timeout (0:01:00)!" before exiting
            fh.seek(max(0, log.stat().st_size - 65536))
            if re.search(rb"(?m)^Timeout \(\d+:\d\d:\d\d", fh.read()):
                hard_timeout = True
                why = "hard time limit reached (stuck where the soft limit cannot interrupt, e.g. in C code)"
    row = {
        "id": model.id, "spec": model.spec, "group": model.group, "family": model.family,
        "kwargs": model.kwargs, "note": model.note, "steps": {}, "total_s": round(elapsed, 3),
        "crashed_in": where or None,
    }
    row["steps"]["task"] = {"ok": False, "error": f"{why}" + (f" during {where}" if where else ""),
                            "category": "timeout" if hard_timeout else "crash"}
    summarize(row)
    row["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return row


# ============================================================================ backends

_PRELOAD = ["torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript", "torch.onnx",
            "fxexport", "fxexport.zoo", "fxexport.describe", "fxexport.verify", "fxexport.export"]


def _local_backend(models: list[ZooModel], options: dict[str, Any], workers: int,
                   on_done: Callable[[dict[str, Any]], None]) -> None:
    """ProcessPoolExecutor, one fresh (forkserver) process per model.

    At most ``workers`` tasks are in flight, so each task's time is its own. A worker that
    dies breaks the pool; the models in flight then are re-run one at a time in a fresh
    pool, and a model that breaks a pool on its own is recorded as a crash.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    options = {**options, "sweep_pid": os.getpid()}  # workers end when the sweep is killed
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    queue = deque(models)
    solo: deque[ZooModel] = deque()
    work_dir = Path(options["work_dir"])
    while queue or solo:
        broken: list[tuple[ZooModel, float]] = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            inflight: dict[Any, tuple[ZooModel, float]] = {}
            while (queue or solo or inflight) and not broken:
                limit = 1 if solo else workers
                while len(inflight) < limit and (solo or (queue and not solo)):
                    model = solo.popleft() if solo else queue.popleft()
                    try:
                        fut = pool.submit(run_model_task, model.to_dict(), options)
                    except BrokenProcessPool:
                        (solo if len(inflight) else queue).appendleft(model)
                        break
                    inflight[fut] = (model, time.perf_counter())
                if not inflight:
                    break
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    model, t0 = inflight.pop(fut)
                    try:
                        on_done(fut.result())
                    except BrokenProcessPool:
                        broken.append((model, t0))
                    except Exception as err:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                        on_done(_crash_row(model, f"worker error: {_first_line(err)}", work_dir,
                                           time.perf_counter() - t0))
            if broken:
                for fut, (model, t0) in list(inflight.items()):
                    broken.append((model, t0))
                inflight.clear()
        if broken:
            if len(broken) == 1:
                model, t0 = broken[0]
                on_done(_crash_row(model, "worker process died (crash, out of memory, or hard time limit)",
                                   work_dir, time.perf_counter() - t0))
            else:  # cannot tell which one died: run them alone
                for model, _ in reversed(broken):
                    solo.appendleft(model)


def _ray_backend(models: list[ZooModel], options: dict[str, Any], workers: int,
                 on_done: Callable[[dict[str, Any]], None], address: str | None = None) -> None:
    """The same task on Ray: one fresh worker process per model (``max_calls=1``), no retries."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install 'ray[default]' (or fxexport[zoo])") from None

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "ignore_reinit_error": True}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers
        ray.init(**kwargs)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(run_model_task)
        refs = {}
        for model in models:
            refs[task.remote(model.to_dict(), options)] = (model, time.perf_counter())
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                model, t0 = refs.pop(ref)
                try:
                    on_done(ray.get(ref))
                except Exception as err:  # noqa: BLE001 - WorkerCrashedError, RayTaskError, ...
                    on_done(_crash_row(model, f"Ray worker failed: {_first_line(err, 160)}",
                                       Path(options["work_dir"]), time.perf_counter() - t0))
    finally:
        if started:
            ray.shutdown()


# ============================================================================ the sweep


def run_sweep(
    models: Sequence[ZooModel],
    *,
    results: str | os.PathLike = RESULTS_FILE,
    backend: str = "local",
    workers: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    fixes: bool = True,
    progress: bool = True,
    ray_address: str | None = None,
    work_dir: str | os.PathLike | None = None,
    console=None,
    stats: dict[str, Any] | None = None,
    hard_grace: float = HARD_GRACE,
    rerun: bool = False,
) -> "OrderedDict[str, dict[str, Any]]":
    """Run the sweep; append each model's row to ``results`` (JSONL) as it finishes.

    With ``resume`` (default) models that already have a row are skipped (failed ones too,
    unless ``retry_failed``). Returns every row of the results file, latest per model.
    ``timeout`` is each model's soft limit (plus :data:`SECONDS_PER_MPARAM` per million
    parameters); ``hard_grace`` seconds later a worker stuck where the soft limit cannot
    interrupt it exits (recorded as a timeout).
    """
    results = Path(results)
    work = Path(work_dir) if work_dir else results.parent
    done_rows = read_results(results) if resume else OrderedDict()
    if not resume and results.exists():
        results.unlink()
    todo = [m for m in models if rerun or m.id not in done_rows
            or (retry_failed and done_rows[m.id].get("status") != "ok")]
    options = {
        "timeout": float(timeout),
        # One torch thread per worker by default: on a shared or oversubscribed machine, OpenMP
        # barriers with 2+ threads made a resnet18 forward ~50x slower here.
        "threads": threads or 1,
        "work_dir": str(work.resolve()),
        "fixes": fixes,
        "hard_grace": float(hard_grace),
    }
    from rich.console import Console

    console = console or Console(stderr=True, highlight=False)
    skipped = len(models) - len(todo)
    if stats is not None:
        stats.update(models_run=len(todo), skipped=skipped)
    if skipped:
        console.print(f"[dim]{skipped} model(s) already in {results}: skipped (--fresh to redo)[/dim]")
    failures = 0
    t0 = time.perf_counter()

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(SpinnerColumn(), TextColumn("[bold]zoo[/bold] {task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("[red]{task.fields[failures]} failed[/red]"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                   console=console, disable=not progress, transient=False)

    def on_done(row: dict[str, Any]) -> None:
        nonlocal failures
        _append(results, row)
        done_rows.pop(row["id"], None)
        done_rows[row["id"]] = row
        if row.get("status") != "ok":
            failures += 1
        mark = "[green]ok[/green]" if row.get("status") == "ok" else f"[red]FAIL[/red] ({row.get('category')})"
        extra = "" if row.get("all_ok") or row.get("status") != "ok" else " [yellow](partial)[/yellow]"
        from rich.markup import escape

        console.print(f"{escape(row['id'])}: {mark}{extra} {row.get('total_s', 0):.1f} s"
                      + (f"  [dim]{escape(row.get('failure') or '')}[/dim]" if row.get("failure") else ""),
                      highlight=False)
        bar.update(task_id, advance=1, failures=failures)

    with bar:
        task_id = bar.add_task(f"{backend} x{workers}", total=len(todo), failures=0)
        if todo:
            if backend == "local":
                _local_backend(list(todo), options, workers, on_done)
            elif backend == "ray":
                _ray_backend(list(todo), options, workers, on_done, address=ray_address)
            else:
                raise ValueError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    if todo:
        console.print(f"[bold]{len(todo)} model(s) in {time.perf_counter() - t0:.0f} s[/bold], {failures} failed")
    return done_rows


# ============================================================================ the matrix


def _fmt_err(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return "0" if v == 0 else f"{v:.0e}"


def _cell(rec: dict[str, Any] | None, *, label: str = "") -> str:
    if rec is None:
        return ""
    if rec.get("ok") and rec.get("verify_ok"):
        bits = [label] if label else []
        if rec.get("max_abs") is not None:
            bits.append(f"err {_fmt_err(rec['max_abs'])}")
            used = rec.get("tol_used")
            if isinstance(used, (int, float)) and used >= 0.05:  # large outputs: say how close to the tolerance
                bits.append(f"({used:.0%} of tol)")
        return "✅ " + " ".join(bits)
    if rec.get("ok"):  # exported, did not verify
        return f"❌ {rec.get('verify_category') or rec.get('category') or 'mismatch'}"
    return f"❌ {rec.get('category') or 'other'}"


def _time(rec: dict[str, Any] | None, key: str = "time_s") -> float:
    return float((rec or {}).get(key) or 0.0)


def matrix_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compact per-model entries for the JSON behind the matrix."""
    out = []
    for r in rows:
        steps = r.get("steps", {})
        auto = steps.get("onnx_auto", {})
        entry = {
            "id": r["id"], "group": r.get("group"), "family": r.get("family"), "spec": r.get("spec"),
            "kwargs": r.get("kwargs") or {}, "input_shape": r.get("input_shape"), "note": r.get("note") or "",
            "status": r.get("status"), "all_ok": r.get("all_ok"), "category": r.get("category"),
            "failure": r.get("failure"), "fix": r.get("fix"),
            "params_m": steps.get("build", {}).get("params_m"),
            "trace": {k: steps.get("trace", {}).get(k) for k in ("ok", "time_s", "nodes_train", "nodes_eval",
                                                                 "leaf_modules") if k in steps.get("trace", {})},
            "nodes": {"stages": steps.get("nodes", {}).get("stages"), "random": steps.get("nodes", {}).get("random")},
            "onnx_exporter_auto": auto.get("exporter"),
            "total_s": r.get("total_s"), "peak_rss_mb": r.get("peak_rss_mb"),
        }
        for key in ("onnx_auto", "onnx_dynamo", "onnx_torchscript", "onnx_static", "torchscript"):
            rec = steps.get(key)
            if rec is None:
                continue
            entry[key] = {k: rec.get(k) for k in ("ok", "exporter", "method", "export_s", "time_s", "verify_ok",
                                                  "verify_batches", "max_abs", "tol_used", "verify_s", "category", "error",
                                                  "verify_error") if rec.get(k) is not None}
        out.append(entry)
    return out


def summary_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per group: models, ok (dynamic-batch ONNX verified at 2 batch sizes), all steps ok, percentage."""
    figures: dict[str, Any] = {}
    for group in dict.fromkeys([*GROUPS, *(r.get("group") for r in rows)]):
        members = [r for r in rows if r.get("group") == group and r.get("status") != "not run"]
        pending = sum(1 for r in rows if r.get("group") == group and r.get("status") == "not run")
        if not members and not pending:
            continue
        ok = sum(1 for r in members if r.get("status") == "ok")
        figures[group] = {
            "models": len(members), "ok": ok, "all_ok": sum(1 for r in members if r.get("all_ok")),
            "ok_pct": round(100.0 * ok / max(1, len(members)), 1),
            **({"not_run": pending} if pending else {}),
            "categories": {c: sum(1 for r in members if r.get("category") == c) for c in CATEGORIES
                           if any(r.get("category") == c for r in members)},
        }
    return figures


def write_matrix(rows: "OrderedDict[str, dict[str, Any]] | Sequence[dict[str, Any]]",
                 md_path: str | os.PathLike = MATRIX_FILE, json_path: str | os.PathLike | None = MATRIX_JSON,
                 *, order: Sequence[str] | None = None, meta: dict[str, Any] | None = None) -> str:
    """Write the compatibility matrix (Markdown) and the JSON behind it; return the Markdown."""
    from fxexport._io import atomic_path

    rows = list(rows.values()) if isinstance(rows, Mapping) else list(rows)
    if order is not None:
        rank = {mid: i for i, mid in enumerate(order)}
        rows.sort(key=lambda r: rank.get(r["id"], len(rank)))
    figures = summary_figures(rows)
    meta = dict(meta or {})
    import platform

    try:
        import torch
        versions = {"torch": torch.__version__.split("+")[0]}
        for mod in ("torchvision", "timm", "onnx", "onnxruntime", "onnxscript"):
            with contextlib.suppress(Exception):
                versions[mod] = __import__(mod).__version__.split("+")[0]
    except Exception:  # noqa: BLE001
        versions = {}
    wall = meta.get("wall_s")
    cpu_s = sum(float(r.get("total_s") or 0) for r in rows)
    lines = [
        "# Compatibility matrix",
        "",
        "<!-- generated by `make zoo` (scripts/zoo.py, fxexport/zoo.py); do not edit by hand -->",
        "",
        "Which backbones become a multi-output extractor that exports with **named outputs and a truly "
        "dynamic batch** and **verifies** against the eager extractor. For every model: trace it, take the "
        "output of each stage (timm's `feature_info` where the model has it; for torchvision, the last node "
        "of each top-level stage, the main body opened up) plus one random tensor-valued node, export the "
        "extractor to ONNX with the exporter `exporter=\"auto\"` picks and with the other one, and to "
        "TorchScript, all from a batch-2 example with `dynamic=(\"batch\",)`, then verify each artifact in "
        "onnxruntime / torch.jit at **batch 1 and batch 3** (default tolerances: rtol 1e-3, atol 1e-4). "
        "Weights are seeded random (nothing downloaded).",
        "",
        f"Environment: {', '.join(f'{k} {v}' for k, v in versions.items())}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU core(s)."
        + (f" Sweep: {meta.get('workers', 1)} worker(s), {wall / 60:.1f} min wall" if wall else "")
        + (f", {cpu_s / 60:.1f} min summed over models." if cpu_s else ".")
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "Input sizes: small where the model allows it (64 px for convnets, 96 for inception_v3, 112 for "
        "torchvision's Swin, 128 for segmentation and detection backbones); torchvision ViTs are built "
        "with `image_size=112/128`; timm models run at 64 px when they accept it, else at their own "
        "`pretrained_cfg` size (transformers with a fixed `img_size`). The **input** column gives the "
        "size used.",
        "",
        "## Summary",
        "",
        "| group | models | ONNX, dynamic batch, verified at 2 batch sizes | every step ok |",
        "|---|---:|---:|---:|",
    ]
    for group, f in figures.items():
        extra = f" (+{f['not_run']} not run)" if f.get("not_run") else ""
        lines.append(f"| {group} | {f['models']}{extra} | **{f['ok']}** ({f['ok_pct']:.1f}%) | {f['all_ok']} |")
    cats: dict[str, int] = {}
    for f in figures.values():
        for c, n in f["categories"].items():
            cats[c] = cats.get(c, 0) + n
    if cats:
        lines += ["", "Failures of the headline (auto ONNX export + verification) by category: "
                  + ", ".join(f"{c} {n}" for c, n in cats.items()) + "."]
    lines += [
        "",
        "Columns: **ONNX auto** is `export_onnx(..., exporter=\"auto\")` (the exporter it picked in "
        "brackets) verified at batch 1 and 3 with its max abs error; **dynamo** / **torchscript** are the "
        "other exporter run explicitly; **TorchScript** is `export_torchscript` (script, or trace as the "
        "fallback); times are seconds (trace = both modes; export = all exports and verifications).",
        "",
    ]
    for group in figures:
        members = [r for r in rows if r.get("group") == group]
        lines += [f"## {group}", "",
                  "| model | input | nodes (trace s) | outputs | ONNX auto | ONNX dynamo | ONNX torchscript | "
                  "TorchScript | time s | failure / fix |",
                  "|---|---|---:|---:|---|---|---|---|---:|---|"]
        for r in members:
            if r.get("status") == "not run":
                lines.append(f"| {r['id']} | | | | not run | | | | | not run in this sweep (time) |")
                continue
            s = r.get("steps", {})
            auto = s.get("onnx_auto")
            exp = (auto or {}).get("exporter")
            cells = {"onnx_dynamo": s.get("onnx_dynamo"), "onnx_torchscript": s.get("onnx_torchscript")}
            dyn_cell = "= auto" if exp == "dynamo" and _onnx_ok(auto or {}) else _cell(cells["onnx_dynamo"])
            ts_onnx_cell = "= auto" if exp == "torchscript" and _onnx_ok(auto or {}) else _cell(cells["onnx_torchscript"])
            trace = s.get("trace", {})
            node_cell = f"{trace.get('nodes_eval', '')} ({_time(trace):.1f})" if trace.get("ok") else (
                "❌" if trace else "")
            shape = r.get("input_shape")
            input_cell = f"{shape[2]}x{shape[3]}" if shape and len(shape) == 4 else ""
            if r.get("note"):
                input_cell += f" ¹"
            outputs = s.get("extractor", {}).get("outputs", "")
            auto_cell = _cell(auto, label=f"[{exp}]" if exp else "") if auto else (
                "❌ " + (r.get("category") or "") if r.get("status") != "ok" else "")
            ts = s.get("torchscript")
            ts_cell = _cell(ts, label=f"[{ts.get('method')}]" if ts and ts.get("method") else "") if ts else ""
            why = r.get("failure") or ""
            fix = r.get("fix") or ""
            text = why + (f" **fix:** {fix}" if fix else "")
            text = text.replace("|", "\\|").replace("\n", " ")
            name = r["id"].replace("|", "\\|")
            lines.append(f"| {name} | {input_cell} | {node_cell} | {outputs} | {auto_cell} | {dyn_cell} | "
                         f"{ts_onnx_cell} | {ts_cell} | {float(r.get('total_s') or 0):.0f} | {text} |")
        notes = [(r["id"], r["note"]) for r in members if r.get("note")]
        if notes:
            lines += [""] + [f"¹ {mid}: {note}" for mid, note in notes]
        lines.append("")
    text = "\n".join(lines).rstrip() + "\n"
    md_path = Path(md_path)
    with atomic_path(md_path) as tmp:
        tmp.write_text(text)
    if json_path is not None:
        data = {"generated_by": "scripts/zoo.py", "versions": versions, "cpu_count": os.cpu_count(),
                **{k: v for k, v in meta.items()}, "cpu_s": round(cpu_s, 1), "summary": figures,
                "models": matrix_rows(rows)}
        with atomic_path(Path(json_path)) as tmp:
            tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return text


# ============================================================================ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's options (shared by ``scripts/zoo.py`` and ``fxexport zoo``)."""
    p.add_argument("--models", default="all",
                   choices=("all", "torchvision", "classification", "segmentation", "detection", "timm", "smoke"),
                   help="which set of models (default all)")
    p.add_argument("--only", metavar="REGEX", default=None, help="only models whose id matches REGEX")
    p.add_argument("--limit", type=int, default=None, help="at most N models (after --only)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or Ray (pip install 'ray[default]')")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, default=1, help="models run at once (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default 1)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds per model before it is recorded as a timeout (default {DEFAULT_TIMEOUT:.0f})")
    p.add_argument("--results", default=RESULTS_FILE, help=f"JSONL file of results (default {RESULTS_FILE})")
    p.add_argument("--fresh", action="store_true", help="start over instead of skipping models already done")
    p.add_argument("--retry-failed", action="store_true", help="re-run models whose last result failed")
    p.add_argument("--rerun", action="store_true", help="re-run the selected models even if they have a result")
    p.add_argument("--no-fixes", action="store_true", help="do not try fixes (leaf modules, other exporter)")
    p.add_argument("--matrix", default=MATRIX_FILE, help=f"Markdown matrix to write (default {MATRIX_FILE})")
    p.add_argument("--json-out", default=MATRIX_JSON, help=f"JSON behind the matrix (default {MATRIX_JSON})")
    p.add_argument("--no-matrix", action="store_true", help="do not write the matrix")
    p.add_argument("--matrix-only", action="store_true",
                   help="run nothing: write the matrix from the results file (models without a result: 'not run')")
    p.add_argument("--note", default=None, help="a sentence for the matrix's header (e.g. how it was run)")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per model only)")


#: torchvision models with ~80M+ parameters: run last (their weights are serialized, checked
#: and loaded many times per model), so an interrupted sweep has covered the most models
HEAVY = {"vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_x_32gf", "convnext_large",
         "efficientnet_v2_l", "efficientnet_v2_m", "wide_resnet101_2", "wide_resnet50_2", "swin_v2_b", "swin_b",
         "convnext_base", "resnext101_64x4d", "resnext101_32x8d", "regnet_y_16gf", "regnet_x_16gf", "vgg11",
         "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "alexnet", "vit_b_16",
         "vit_b_32", "deeplabv3_resnet101", "fcn_resnet101"}


def run_order(models: Sequence[ZooModel]) -> list[ZooModel]:
    """The order models run in: timm, light torchvision, segmentation / detection, heavy last."""
    rank = {GROUPS[3]: 0, GROUPS[0]: 1, GROUPS[1]: 2, GROUPS[2]: 2}

    def key(m: ZooModel):
        heavy = m.spec.split(":", 1)[-1] in HEAVY
        return (3 if heavy else rank.get(m.group, 1),)

    return sorted(models, key=key)


def select(args) -> list[ZooModel]:
    models = zoo_models(args.models)
    if args.only:
        pattern = re.compile(args.only)
        models = [m for m in models if pattern.search(m.id)]
    if args.limit is not None:
        models = models[: args.limit]
    return models


def main_from_args(args) -> int:
    """Run the sweep as the command line asked; exit code 0 (failing models are data, not errors)."""
    models = select(args)
    if args.list:
        for m in models:
            sys.stdout.write(f"{m.id}\t{m.group}\t{m.family}\n")
        return 0
    if not models:
        sys.stderr.write("zoo: no model matches\n")
        return 2
    t0 = time.perf_counter()
    ran: dict[str, Any] = {}
    if args.matrix_only:
        rows = OrderedDict((k, recategorize(v)) for k, v in read_results(args.results).items())
    else:
        rows = run_sweep(run_order(models), results=args.results, backend=args.backend, workers=args.workers,
                         timeout=args.timeout, threads=args.threads, resume=not args.fresh,
                         retry_failed=args.retry_failed, fixes=not args.no_fixes, progress=not args.no_progress,
                         ray_address=args.ray_address, stats=ran, rerun=args.rerun)
    wall = time.perf_counter() - t0
    if not args.no_matrix:
        ids = [m.id for m in models]
        chosen = [rows[m.id] if m.id in rows else {"id": m.id, "group": m.group, "family": m.family,
                                                   "spec": m.spec, "status": "not run", "steps": {}}
                  for m in models]
        meta = {"wall_s": round(wall, 1), "models_run": ran.get("models_run", 0), "workers": args.workers,
                "backend": args.backend, "timeout_s": args.timeout, "models_set": args.models}
        if args.matrix_only:  # keep what the sweep that made the results recorded about itself
            meta = {k: v for k, v in meta.items() if k not in ("wall_s", "models_run")}
            previous = {}
            with contextlib.suppress(Exception):
                previous = json.loads(Path(args.json_out).read_text())
            keys = ("wall_s", "models_run", "workers", "backend", "timeout_s")
            meta.update({k: previous[k] for k in keys if k in previous} or _results_span(chosen))
        if args.note:
            meta["note"] = args.note
        write_matrix(chosen, args.matrix, args.json_out, order=ids, meta=meta)
        figures = summary_figures(chosen)
        for group, f in figures.items():
            sys.stderr.write(f"{group}: {f['ok']}/{f['models']} ({f['ok_pct']:.1f}%) ok\n")
        sys.stderr.write(f"matrix: {args.matrix}, {args.json_out}\n")
    return 0


def _results_span(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """First start to last finish of the rows' results (the sweep's wall time when it ran in one go)."""
    spans = []
    for r in rows:
        with contextlib.suppress(Exception):
            end = _dt.datetime.fromisoformat(r["finished_at"]).timestamp()
            spans.append((end - float(r.get("total_s") or 0), end))
    if not spans:
        return {}
    return {"wall_s": round(max(e for _, e in spans) - min(b for b, _ in spans), 1), "models_run": len(spans)}

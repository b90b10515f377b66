"""Property tests: any subset of tensor-valued nodes exports and verifies; the metric paths agree.

For a handful of small models (the ``models/`` nets, a torchvision and a timm one),
hypothesis draws a random subset of the nodes whose value is a tensor (present in both
the train and the eval graph), builds the extractor, exports it to ONNX and TorchScript
with a dynamic batch, and verifies both at batch 1 and 3. A node whose value is not a
tensor (a size, an int) must get the flatten layer's clear error naming the node instead.

The comparison engine (:mod:`fxexport.compare`) has two metric paths: the fast one
(float32 passes, for finite tensors) and the careful one (float64, inf/nan aware).
Hypothesis cross-checks them on random finite tensors, and checks that the careful
path treats inf/nan the same wherever they sit.

Fast tier: a few examples per model property (``max_examples`` below); the slow tier runs more.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

import fxexport
from fxexport import OutputSpecError, create_feature_extractor, get_graph_node_names
from fxexport.compare import Tolerance, careful_metrics, compare_tensors, fast_metrics
from fxexport.describe import describe_nodes
from fxexport.models import default_input_shape, load_model, resolve_leaf_modules

ROOT = Path(__file__).resolve().parents[1]


class SizeHead(nn.Module):
    """A net with non-tensor nodes: ``x.shape`` (a torch.Size) and ``x.shape[0]`` (an int)."""

    example_input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        n = y.shape[0]
        pooled = y.mean(dim=(2, 3)).reshape(n, -1)
        return self.fc(pooled)


def _size_head():
    torch.manual_seed(0)
    return SizeHead().eval()


#: name -> (builder, leaf module class names, input shape or None for the model's own)
MODELS = {
    "multitask": (lambda: load_model(str(ROOT / "models/multitask.py"), seed=0), [], None),
    "needs_leaf": (lambda: load_model(str(ROOT / "models/needs_leaf.py"), seed=0), ["Gate"], None),
    "train_eval": (lambda: load_model(str(ROOT / "models/train_eval.py"), seed=0), [], None),
    "two_head": (lambda: load_model(str(ROOT / "models/two_head.py"), seed=0), [], None),
    "resnet18": (lambda: load_model("torchvision:resnet18", seed=0), [], (1, 3, 32, 32)),
    "timm_test_vit": (lambda: load_model("timm:test_vit", seed=0), [], None),
    "size_head": (_size_head, [], None),
}
FAST = dict(max_examples=3, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.lru_cache(maxsize=None)
def subject(name: str):
    """(model, leaf classes, example input (batch 2), tensor-valued nodes, non-tensor nodes)."""
    build, leaf_names, shape = MODELS[name]
    model = build()
    leaves = resolve_leaf_modules(model, leaf_names) if leaf_names else []
    shape = shape or default_input_shape(model)
    x = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, eval_ = get_graph_node_names(model, leaf_modules=leaves or None, suppress_diff_warning=True)
        infos = describe_nodes(model, x[:1], mode="eval", leaf_modules=leaves or None)
    both = set(train) & set(eval_)
    tensors = [i.name for i in infos if i.kind != "placeholder" and i.name in both
               and isinstance(i.shape, list) and all(isinstance(d, int) for d in i.shape)]
    others = [i.name for i in infos if i.kind not in ("placeholder", "output") and i.name in both
              and i.shape is None and i.value is not None]
    return model, leaves, x, tensors, others


def _export_and_verify(name: str, nodes: list[str], tmp: Path) -> None:
    model, leaves, x, _, _ = subject(name)
    extractor = create_feature_extractor(model, nodes, leaf_modules=leaves or None,
                                         suppress_diff_warning=True).eval()
    onnx_path, ts_path = tmp / f"{name}.onnx", tmp / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m_onnx = fxexport.export_onnx(extractor, (x,), onnx_path, dynamic=("batch",))
        m_ts = fxexport.export_torchscript(extractor, (x,), ts_path, dynamic=("batch",))
    assert m_onnx.nodes == m_ts.nodes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        report = fxexport.verify([onnx_path, ts_path], extractor, n_inputs=2, sizes={"batch": [1, 3]})
    assert report.ok, f"{name} {nodes}: {report.summary()}"
    assert sorted({s[0][0] for s in report.inputs}) == [1, 3]


def node_subsets(name: str, max_size: int = 4):
    tensors = subject(name)[3]
    return st.lists(st.sampled_from(tensors), min_size=1, max_size=min(max_size, len(tensors)), unique=True)


@st.composite
def model_and_nodes(draw, names=tuple(MODELS)):
    name = draw(st.sampled_from(names))
    return name, draw(node_subsets(name))


# --------------------------------------------------------------------------- tensor-valued nodes


@settings(**FAST)
@given(case=model_and_nodes(names=("multitask", "needs_leaf", "train_eval", "two_head")))
def test_random_nodes_of_example_models_export_and_verify(case, tmp_path_factory):
    name, nodes = case
    _export_and_verify(name, nodes, tmp_path_factory.mktemp("prop"))


@settings(**FAST)
@given(case=model_and_nodes(names=("resnet18", "timm_test_vit", "size_head")))
def test_random_nodes_of_zoo_models_export_and_verify(case, tmp_path_factory):
    name, nodes = case
    _export_and_verify(name, nodes, tmp_path_factory.mktemp("prop"))


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=model_and_nodes())
def test_random_nodes_export_and_verify_many(case, tmp_path_factory):
    name, nodes = case
    _export_and_verify(name, nodes, tmp_path_factory.mktemp("prop"))


# --------------------------------------------------------------------------- non-tensor nodes


def test_size_head_has_non_tensor_nodes():
    others = subject("size_head")[4]
    assert others, "the SizeHead net should have size / int nodes"


@settings(**FAST)
@given(data=st.data())
def test_non_tensor_node_gets_the_flatten_error(data, tmp_path_factory):
    model, _, x, tensors, others = subject("size_head")
    bad = data.draw(st.sampled_from(others), label="non-tensor node")
    good = data.draw(st.lists(st.sampled_from(tensors), max_size=2, unique=True), label="tensor nodes")
    extractor = create_feature_extractor(model, [*good, bad], suppress_diff_warning=True).eval()
    tmp = tmp_path_factory.mktemp("bad")
    for export, path in ((fxexport.export_onnx, tmp / "bad.onnx"), (fxexport.export_torchscript, tmp / "bad.pt")):
        with pytest.raises(OutputSpecError) as info:
            export(extractor, (x,), path, dynamic=("batch",))
        message = str(info.value)
        assert f"node '{bad}'" in message and "not a tensor" in message, message
        assert not path.exists(), "a failed export must leave no file"


# --------------------------------------------------------------------------- the two metric paths agree

#: Magnitudes of real outputs: 0, or 1e-6 (2**-20) .. 1e4 either sign (below that, float32 products go subnormal and the
#: fast path's float32 bound loses digits the float64 one keeps: that is float32, not a disagreement of the paths).
_MAGNITUDE = st.one_of(st.just(0.0), st.floats(2.0**-20, 1e4, width=32))
_ELEMENT = st.tuples(_MAGNITUDE, st.booleans()).map(lambda m: -m[0] if m[1] else m[0])
_TOLERANCES = st.tuples(st.sampled_from([0.0, 1e-5, 1e-3, 0.1]),      # rtol
                        st.sampled_from([0.0, 1e-6, 1e-4, 1e-2]),     # atol
                        st.sampled_from([0.0, 1e-5, 0.25]))           # range_atol


@st.composite
def finite_pairs(draw):
    """(ref, out): a random finite tensor and an output near it (or equal, or unrelated)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 200))
    ref = draw(hnp.arrays(dtype, n, elements=_ELEMENT))
    how = draw(st.sampled_from(["noise", "noise", "equal", "unrelated", "scaled"]))
    if how == "equal":
        out = ref.copy()
    elif how == "unrelated":
        out = draw(hnp.arrays(dtype, n, elements=_ELEMENT))
    elif how == "scaled":
        out = (ref * draw(st.sampled_from([1.0001, 0.999, 1.01, -1.0]))).astype(dtype)
    else:
        scale = draw(st.sampled_from([1e-7, 1e-5, 1e-3, 1e-1]))
        noise = draw(hnp.arrays(dtype, n, elements=st.floats(-1.0, 1.0, width=32)))
        out = (ref + noise * scale * (np.abs(ref) + 1.0)).astype(dtype)
    return torch.from_numpy(ref), torch.from_numpy(out)


def _close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(pair=finite_pairs(), tols=_TOLERANCES)
def test_fast_and_careful_metric_paths_agree_on_finite_tensors(pair, tols):
    ref, out = pair
    rtol, atol, range_atol = tols
    fast = fast_metrics(ref, out, rtol, atol, range_atol)
    careful = careful_metrics(ref, out, rtol, atol, range_atol)
    assert fast is not None, "the fast path gave up on finite tensors"
    eps = 1e-5 if ref.dtype == torch.float32 else 1e-12  # float32 rounding of the difference and the bound
    assert _close(fast.atol, careful.atol, eps)
    assert _close(fast.max_abs, careful.max_abs, eps)
    assert _close(fast.worst_ratio, careful.worst_ratio, eps), (fast, careful)
    assert _close(fast.max_rel, careful.max_rel, eps), (fast, careful)
    assert abs(fast.cosine - careful.cosine) <= 1e-5, (fast, careful)
    # elements outside: the same, but for elements that sit on the bound within rounding
    r, a = ref.double(), out.double()
    diff, bound = (a - r).abs(), r.abs() * rtol + careful.atol
    ratio = torch.where(diff == 0, torch.zeros(()), diff / bound)
    on_edge = int(torch.count_nonzero((ratio > 1 - 10 * eps) & (ratio < 1 + 10 * eps)))
    assert abs(fast.n_outside - careful.n_outside) <= on_edge, (fast, careful)
    # compare_tensors takes the fast path here and agrees with both
    check = compare_tensors("x", ref, out, Tolerance(rtol=rtol, atol=atol, range_atol=range_atol, dtype_floor=False))
    assert check.max_abs == fast.max_abs and check.mismatch == fast.n_outside / ref.numel()
    assert check.ok == (fast.n_outside == 0)


_SPECIALS = st.sampled_from([math.inf, -math.inf, math.nan])


@st.composite
def pairs_with_specials(draw):
    """(ref, out, positions): finite tensors with inf/nan written at the same places in both."""
    ref, out = draw(finite_pairs())
    n = ref.numel()
    positions = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    values = [draw(_SPECIALS) for _ in positions]
    ref, out = ref.clone(), out.clone()
    for pos, v in zip(positions, values):
        ref[pos] = out[pos] = v
    return ref, out, positions


@settings(max_examples=100, deadline=None, derandomize=True)
@given(case=pairs_with_specials(), tols=_TOLERANCES)
def test_careful_path_treats_matching_inf_and_nan_as_equal(case, tols):
    """Matching inf/nan change nothing: the metrics are those of the finite elements alone."""
    ref, out, positions = case
    rtol, atol, range_atol = tols
    assert fast_metrics(ref, out, rtol, atol, range_atol) is None  # the fast path hands them over
    keep = torch.ones(ref.numel(), dtype=torch.bool)
    keep[positions] = False
    with_specials = careful_metrics(ref, out, rtol, atol, range_atol)
    if not keep.any():  # nothing finite: everything matched
        assert with_specials.n_outside == 0 and with_specials.max_abs == 0.0 and with_specials.cosine == 1.0
        return
    finite_only = careful_metrics(ref[keep], out[keep], rtol, atol, range_atol)
    assert with_specials.n_outside == finite_only.n_outside
    assert with_specials.max_abs == finite_only.max_abs
    assert _close(with_specials.worst_ratio, finite_only.worst_ratio, 1e-12)
    assert _close(with_specials.max_rel, finite_only.max_rel, 1e-12)
    assert abs(with_specials.cosine - finite_only.cosine) <= 1e-9
    tol = Tolerance(rtol=rtol, atol=atol, range_atol=range_atol, dtype_floor=False)
    assert compare_tensors("x", ref, out, tol).ok == compare_tensors("x", ref[keep], out[keep], tol).ok


@settings(max_examples=100, deadline=None, derandomize=True)
@given(case=pairs_with_specials(), tols=_TOLERANCES, data=st.data())
def test_careful_path_counts_every_mismatched_inf_or_nan(case, tols, data):
    """An inf/nan against anything else (a number, the other infinity, nan vs inf) is one element outside,
    wherever it sits, and makes the check fail with an infinite max error."""
    ref, out, positions = case
    rtol, atol, range_atol = tols
    broken = data.draw(st.lists(st.sampled_from(positions), min_size=1, unique=True), label="broken")
    out = out.clone()
    for pos in broken:
        v = float(ref[pos])
        others = [x for x in (0.0, 1.0, math.inf, -math.inf, math.nan)
                  if not (x == v or (math.isnan(x) and math.isnan(v)))]
        replacement = data.draw(st.sampled_from(others))
        out[pos] = replacement
    keep = torch.ones(ref.numel(), dtype=torch.bool)
    keep[positions] = False
    metrics = careful_metrics(ref, out, rtol, atol, range_atol)
    finite_outside = careful_metrics(ref[keep], out[keep], rtol, atol, range_atol).n_outside if keep.any() else 0
    assert metrics.n_outside == finite_outside + len(broken)
    assert metrics.max_abs == math.inf and metrics.worst_ratio == math.inf
    assume(ref.numel() > 0)
    check = compare_tensors("x", ref, out, Tolerance(rtol=rtol, atol=atol, range_atol=range_atol,
                                                     max_mismatch=0.0, dtype_floor=False))
    assert not check.ok and check.max_abs == math.inf
    # the same inputs the other way round: the same count
    assert careful_metrics(out, ref, rtol, atol, range_atol).n_outside == metrics.n_outside

"""Property tests: any subset of tensor-valued nodes exports and verifies.

For a handful of small models (the ``models/`` nets, a torchvision and a timm one),
hypothesis draws a random subset of the nodes whose value is a tensor (present in both
the train and the eval graph), builds the extractor, exports it to ONNX and TorchScript
with a dynamic batch, and verifies both at batch 1 and 3. A node whose value is not a
tensor (a size, an int) must get the flatten layer's clear error naming the node instead.

Fast tier: a few examples per property (``max_examples`` below); the slow tier runs more.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fxexport
from fxexport import OutputSpecError, create_feature_extractor, get_graph_node_names
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

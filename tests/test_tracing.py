"""Node naming: the tracer classes and get_graph_node_names.

Names are module paths down to the op or leaf module; repeats within one parent
are numbered ``_1``, ``_2``, ...; the top-level module's name is never included.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import fx, nn

from fxexport import LeafModuleAwareTracer, NodePathTracer, TraceError, get_graph_node_names
from fxexport.extractor import _is_subseq, _warn_graph_differences


class TwiceBlock(nn.Module):
    """``x + 1`` twice and the same relu twice, inside a submodule."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.relu(x + 1) + 1)


class TwiceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = TwiceBlock()
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.sub(x)
        return self.relu(self.relu(x + 1) + 1)


class DataDependent(nn.Module):
    """Branches on a tensor value: untraceable unless it is a leaf."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class WithDataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = DataDependent()

    def forward(self, x):
        return self.gate(self.conv(x)) + 1


class IntOfProxy(nn.Module):
    def forward(self, x):
        return x.view(int(x.shape[0]), -1) if int(x.sum()) else x


def data_dependent_scale(x):
    """A free function with data-dependent control flow (needs autowrap_functions)."""
    return x * 2 if x.sum() > 0 else x


class CallsFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return data_dependent_scale(self.conv(x))


class TrainOnlyBranch(nn.Module):
    """Adds noise only in training mode: the train graph has extra nodes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        if self.training:
            x = x + torch.randn_like(x)
        return torch.relu(x)


def test_names_are_module_paths_numbered_within_their_parent():
    tracer = NodePathTracer()
    tracer.trace(TwiceNet())
    assert list(tracer.node_to_qualname.values()) == [
        "x", "sub.add", "sub.relu", "sub.add_1", "sub.relu_1", "add", "relu", "add_1", "relu_1"]


def test_node_to_qualname_keys_are_the_graph_nodes_in_execution_order():
    tracer = NodePathTracer()
    graph = tracer.trace(TwiceNet())
    graph_nodes = [n for n in graph.nodes if n.op != "output"]
    assert list(tracer.node_to_qualname) == graph_nodes


def test_leaf_module_is_a_single_call_module_node():
    tracer = NodePathTracer(leaf_modules=[TwiceBlock])
    graph = tracer.trace(TwiceNet())
    assert "sub" in tracer.node_to_qualname.values()
    assert not any(name.startswith("sub.") for name in tracer.node_to_qualname.values())
    assert [n.op for n in graph.nodes if n.target == "sub"] == ["call_module"]


def test_leaf_module_aware_tracer_passes_torch_fx_keywords_on():
    tracer = LeafModuleAwareTracer(leaf_modules=[DataDependent], autowrap_functions=(data_dependent_scale,),
                                   param_shapes_constant=True)
    assert tracer.param_shapes_constant is True
    graph = tracer.trace(WithDataDependent())
    assert isinstance(graph, fx.Graph)
    # torch's own leaves stay leaves too
    assert tracer.is_leaf_module(nn.Conv2d(1, 1, 1), "conv")


def test_code_written_for_torchvision_tracers_works_unchanged():
    # torchvision users build the tracer from a kwargs dict and call .trace themselves.
    tracer_kwargs = {"leaf_modules": [DataDependent], "autowrap_modules": ()}
    tracer = NodePathTracer(**tracer_kwargs)
    graph = tracer.trace(WithDataDependent())
    gm = fx.GraphModule(tracer.root, graph, "Traced")
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(gm(x), WithDataDependent.forward(tracer.root, x))
    assert list(tracer.node_to_qualname.values()) == ["x", "conv", "gate", "add"]


def test_get_graph_node_names_returns_train_and_eval_lists_and_restores_mode():
    model = TwiceNet().train()
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == eval_nodes
    assert model.training
    model.eval()
    get_graph_node_names(model)
    assert not model.training


def test_get_graph_node_names_warns_when_modes_differ_unless_suppressed():
    model = TrainOnlyBranch()
    with pytest.warns(UserWarning, match="eval mode are a subsequence"):
        train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == ["x", "conv", "randn_like", "add", "relu"]
    assert eval_nodes == ["x", "conv", "relu"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_graph_node_names(model, suppress_diff_warning=True)


def test_leaf_modules_keyword_and_tracer_kwargs_both_work():
    by_keyword = get_graph_node_names(WithDataDependent(), leaf_modules=[DataDependent])
    by_kwargs = get_graph_node_names(WithDataDependent(), tracer_kwargs={"leaf_modules": [DataDependent]})
    assert by_keyword == by_kwargs
    assert by_keyword[1] == ["x", "conv", "gate", "add"]


def test_autowrap_functions_keep_a_function_as_one_node():
    _, eval_nodes = get_graph_node_names(CallsFunction(),
                                         tracer_kwargs={"autowrap_functions": [data_dependent_scale]})
    assert eval_nodes == ["x", "conv", "data_dependent_scale"]


def test_user_tracer_kwargs_dict_is_not_modified():
    kwargs = {"leaf_modules": [DataDependent]}
    get_graph_node_names(WithDataDependent(), tracer_kwargs=kwargs)
    assert kwargs == {"leaf_modules": [DataDependent]}


def test_untraceable_module_error_names_the_module_and_the_fix():
    with pytest.raises(TraceError) as info:
        get_graph_node_names(WithDataDependent())
    message = str(info.value)
    assert "'gate'" in message and "DataDependent" in message
    assert "leaf_modules=" in message and "autowrap_functions" in message
    assert "\n" not in message


def test_int_of_a_proxy_is_reported_as_a_trace_error():
    with pytest.raises(TraceError, match="IntOfProxy|top level"):
        get_graph_node_names(IntOfProxy())


def test_torchvision_ops_modules_are_leaves_and_math_is_wrapped_by_default():
    import torchvision

    class UsesOps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torchvision.ops.Conv2dNormActivation(3, 4)
            self.depth = torchvision.ops.StochasticDepth(0.2, "row")

        def forward(self, x):
            import math
            return self.depth(self.conv(x)) * math.sqrt(x.shape[1])

    _, eval_nodes = get_graph_node_names(UsesOps())
    assert eval_nodes[:3] == ["x", "conv", "depth"]
    assert "sqrt" in eval_nodes


def test_timm_registered_no_trace_modules_are_honoured_without_listing_them():
    import timm  # part of the test extra: a missing timm is a set-up failure, not a skip
    from timm.layers import register_notrace_module

    @register_notrace_module
    class TimmStyleGate(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = TimmStyleGate()

        def forward(self, x):
            return self.gate(x) + 1

    _, eval_nodes = get_graph_node_names(Net())
    assert eval_nodes == ["x", "gate", "add"]
    assert timm is not None


def test_is_subseq():
    assert _is_subseq([1, 2, 3, 4], [1, 3])
    assert _is_subseq([1, 2], [])
    assert not _is_subseq([1, 2, 3], [3, 1])
    assert not _is_subseq([1, 2], [1, 2, 3])


def test_warn_graph_differences_says_which_way():
    def traced(model, training):
        tracer = NodePathTracer()
        tracer.trace(model.train(training))
        return tracer

    model = TrainOnlyBranch()
    train_tracer, eval_tracer = traced(model, True), traced(model, False)
    with pytest.warns(UserWarning, match="eval mode are a subsequence"):
        _warn_graph_differences(train_tracer, eval_tracer)
    with pytest.warns(UserWarning, match="train mode are a subsequence"):
        _warn_graph_differences(eval_tracer, train_tracer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_graph_differences(train_tracer, traced(model, True))


def test_a_timm_model_that_needs_timm_leaves_traces_without_listing_them():
    # timm's maxvit only traces with timm's registered no-trace modules/functions;
    # torchvision's tracer fails on it unless the user passes them by hand.
    import timm  # part of the test extra: a missing timm is a set-up failure, not a skip
    model = timm.create_model("maxvit_tiny_tf_224", pretrained=False, num_classes=10).eval()
    _, eval_nodes = get_graph_node_names(model, suppress_diff_warning=True)
    assert len(eval_nodes) > 100
    from fxexport import create_feature_extractor
    extractor = create_feature_extractor(model, {"stages.0": "s0"}, suppress_diff_warning=True)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert extractor(x)["s0"].shape == (1, 64, 56, 56)

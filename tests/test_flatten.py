"""fxexport.flatten: OutputSpec naming, flatten/unflatten round trips, the FlatOutputs wrapper."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxexport import Manifest, OutputSpec, OutputSpecError, TensorSpec, flatten, unflatten
from fxexport.flatten import FlatOutputs, forward_input_names


def nested_outputs():
    t = torch.arange(6.0).reshape(2, 3)
    return OrderedDict(
        feat=t,
        pair=(t + 1, [t + 2, {"a": t + 3, "b": (t + 4,)}]),
        heads={"cls": t + 5, "box": t + 6},
    )


def assert_same_structure(a, b):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict))
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, torch.as_tensor(b))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same_structure(a[k], b[k])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_structure(x, y)


def test_flat_names_follow_structure_in_order():
    spec = OutputSpec.from_outputs(nested_outputs())
    assert spec.names == ["feat", "pair.0", "pair.1.0", "pair.1.1.a", "pair.1.1.b.0", "heads.cls", "heads.box"]
    assert spec.keys == ["feat", "pair", "heads"]
    assert spec.paths[3] == ("pair", 1, 1, "a")
    flat = flatten(spec, nested_outputs())
    assert [float(t[0, 0]) for t in flat] == [0, 1, 2, 3, 4, 5, 6]


def test_unflatten_round_trip_from_tuple_mapping_and_numpy():
    outputs = nested_outputs()
    spec = OutputSpec.from_outputs(outputs)
    flat = flatten(spec, outputs)
    assert_same_structure(outputs, unflatten(spec, flat))
    assert_same_structure(outputs, unflatten(spec, dict(zip(reversed(spec.names), reversed(flat)))))
    rebuilt = unflatten(spec, [t.numpy() for t in flat])  # any runtime's arrays
    assert isinstance(rebuilt, OrderedDict) and list(rebuilt) == ["feat", "pair", "heads"]
    assert isinstance(rebuilt["pair"], tuple) and isinstance(rebuilt["pair"][1], list)


def test_tree_survives_manifest_json_with_sorted_keys():
    outputs = OrderedDict(z=torch.zeros(1), a={"zz": torch.zeros(1), "aa": torch.zeros(1)})
    spec = OutputSpec.from_outputs(outputs)
    m = Manifest(format="onnx", inputs=[TensorSpec("x", [1])],
                 outputs=[TensorSpec(n, [1]) for n in spec.names], extra={"output_tree": spec.to_tree()})
    back = Manifest.from_json(m.to_json())
    assert OutputSpec.from_manifest(back) == spec
    assert OutputSpec.from_manifest(back).names == ["z", "a.zz", "a.aa"]  # order kept despite sort_keys
    assert list(unflatten(back, [torch.ones(1)] * 3)["a"]) == ["zz", "aa"]
    json.dumps(spec.to_tree())  # JSON-able


def test_manifest_without_tree_reads_as_flat_tensors():
    m = Manifest(format="onnx", inputs=[], outputs=[TensorSpec("a", [1]), TensorSpec("b", [1])])
    assert list(unflatten(m, [torch.zeros(1), torch.ones(1)])) == ["a", "b"]


@pytest.mark.parametrize(
    "value, fragment",
    [
        (3, "output 'bad' (node 'some.node') is a int (3)"),
        (None, "output 'bad' (node 'some.node') is None"),
        (torch.Size([2, 3]), "at 'bad.0'"),
        ((torch.zeros(1), "text"), "is a str ('text') at 'bad.1'"),
    ],
)
def test_non_tensor_values_name_the_output_and_node(value, fragment):
    with pytest.raises(OutputSpecError) as info:
        OutputSpec.from_outputs({"ok": torch.zeros(1), "bad": value}, nodes={"some.node": "bad", "x": "ok"})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_non_string_dict_keys_and_colliding_names_are_rejected():
    with pytest.raises(OutputSpecError, match="key 0 of type int at 'h'"):
        OutputSpec.from_outputs({"h": {0: torch.zeros(1)}})
    with pytest.raises(OutputSpecError, match="'a.0' occur more than once"):
        OutputSpec.from_outputs({"a": (torch.zeros(1),), "a.0": torch.zeros(1)})
    with pytest.raises(OutputSpecError, match="expected a dict of named outputs"):
        OutputSpec.from_outputs(torch.zeros(1))


def test_unflatten_rejects_wrong_count_and_missing_names():
    spec = OutputSpec.from_outputs({"a": torch.zeros(1), "b": (torch.zeros(1), torch.zeros(1))})
    with pytest.raises(OutputSpecError, match="got 2 flat outputs, the spec has 3"):
        unflatten(spec, [torch.zeros(1)] * 2)
    with pytest.raises(OutputSpecError, match="lack 'b.1'"):
        unflatten(spec, {"a": 1, "b.0": 2})


class Heads(torch.nn.Module):
    def forward(self, image, scale):
        y = image * scale
        return {"feat": (y, y * 2), "pair": (y + 1, y - 1)}  # one value type: scriptable


def test_flat_outputs_wrapper_scripts_traces_and_names():
    model = Heads()
    x, s = torch.rand(2, 3), torch.rand(2, 3)
    spec = OutputSpec.from_outputs(model(x, s))
    flat = FlatOutputs(model, spec)
    assert flat.input_names == ["image", "scale"]
    assert flat.output_names == ["feat.0", "feat.1", "pair.0", "pair.1"]
    expected = flatten(spec, model(x, s))
    scripted = torch.jit.script(flat)
    assert scripted.output_names == flat.output_names
    traced = torch.jit.trace(flat, (x, s))
    for got in (flat(x, s), scripted(x, s), traced(x, s)):
        assert isinstance(got, tuple) and len(got) == 4
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


def test_single_output_is_still_a_tuple_and_wrapper_keeps_mode():
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    model.train()

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return {"only": self.m(x)}

    one = One().train()
    spec = OutputSpec.from_outputs(one.eval()(torch.ones(1)))
    one.train()
    flat = FlatOutputs(one, spec)
    assert flat.training
    out = torch.jit.script(flat.eval())(torch.ones(1))
    assert isinstance(out, tuple) and len(out) == 1


def test_forward_input_names_of_fx_graph_module():
    from fxexport import create_feature_extractor

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    ex = create_feature_extractor(model, {"1": "act"})
    assert forward_input_names(ex) == forward_input_names(ex, 1)
    assert forward_input_names(ex, 2)[1] == "input_1"


# -- property: any nesting of tuples/lists/dicts of tensors round-trips ---------------------------

_keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
_leaves = st.integers(0, 3).map(lambda n: torch.full((n + 1,), float(n)))
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=3),
        st.dictionaries(_keys, inner, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["feat", "p", "q"]), _values, min_size=1, max_size=3))
def test_round_trip_property(outputs):
    try:
        spec = OutputSpec.from_outputs(outputs)
    except OutputSpecError as err:  # only collisions like {"p": (t,), "p.0": t} can't be named
        assert "more than once" in str(err)
        return
    flat = flatten(spec, outputs)
    assert len(flat) == len(spec.names) == len(set(spec.names))
    assert_same_structure(dict(outputs), dict(unflatten(OutputSpec.from_tree(spec.to_tree()), flat)))

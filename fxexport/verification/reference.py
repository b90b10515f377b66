"""The eager reference :func:`fxexport.verify` compares with: run it, rebuild it, re-run it.

* :func:`run_reference` - the extractor's flat outputs on each input set, in the
  artifact's mode, with the extractor's mode and buffers restored afterwards;
* :func:`rebuild_extractor` - the extractor rebuilt from a manifest's model spec and
  node map, under the trust rules of :func:`fxexport.models.check_rebuildable`;
* :func:`nondeterministic_outputs` - the reference run again on one input: which outputs
  differ from their first run (a reference no export can match).

Example:
    >>> import torch
    >>> from fxexport import create_feature_extractor
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> ext = create_feature_extractor(net, {"0": "lin", "1": "act"})
    >>> refs = run_reference(ext, [(torch.ones(2, 4),)], "eval", ["lin", "act"])
    >>> list(refs[0]), nondeterministic_outputs(ext, (torch.ones(2, 4),), "eval", refs[0], ["lin", "act"])
    (['lin', 'act'], {})
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch

from fxexport.errors import InvalidInputError, OutputSpecError, VerificationError
from fxexport.flatten import OutputSpec, flatten
from fxexport.manifest import Manifest

__all__ = ["run_reference", "rebuild_extractor", "flatten_reference", "nondeterministic_outputs"]


def flatten_reference(outputs: Any, manifest_names: Sequence[str]) -> "OrderedDict[str, torch.Tensor]":
    """The extractor's outputs as flat name -> tensor, named as the export layer names them.

    A dict (what :func:`fxexport.create_feature_extractor` returns) is flattened by
    :mod:`fxexport.flatten`; a tensor or a tuple of tensors (a hand-written reference) is
    taken positionally and named after the manifest's outputs.

    Raises:
        VerificationError: the outputs cannot be flattened, or a positional reference has
            another number of outputs than the manifest.

    Example:
        >>> out = flatten_reference({"a": torch.zeros(1), "b": (torch.ones(1), torch.ones(2))}, [])
        >>> list(out)
        ['a', 'b.0', 'b.1']
        >>> list(flatten_reference(torch.zeros(1), ["feat"]))
        ['feat']
    """
    if isinstance(outputs, Mapping):
        try:
            spec = OutputSpec.from_outputs(outputs)
            return OrderedDict(zip(spec.names, flatten(spec, outputs)))
        except OutputSpecError as err:
            raise VerificationError(f"the reference's outputs cannot be compared: {err}") from err
    items = ([outputs] if isinstance(outputs, torch.Tensor)
             else list(outputs) if isinstance(outputs, (list, tuple)) else None)
    if items is None or not all(isinstance(t, torch.Tensor) for t in items) or len(items) != len(manifest_names):
        raise VerificationError(
            f"the reference returns {type(outputs).__name__}, not a dict of named outputs matching the artifact's "
            f"{len(manifest_names)} outputs; pass the extractor built by fxexport.create_feature_extractor"
        )
    return OrderedDict(zip(manifest_names, items))


def rebuild_extractor(manifest: Manifest, weights: str | None, *,
                      trust_model_spec: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(extractor, model)`` rebuilt from the manifest's model entry and node map (fxexport.edge uses it too).

    The manifest is untrusted: its model entry must pass :func:`fxexport.models.check_rebuildable`
    (a ``torchvision:`` / ``timm:`` name with plain kwargs) unless ``trust_model_spec=True``,
    which imports and runs a file or module spec it names. Leaf-module names are matched only
    against classes inside the built model, never imported.

    Raises:
        InvalidInputError: no model spec or node map recorded, a spec refused without
            ``trust_model_spec``, or weights missing / not the recorded ones.

    Example:
        >>> rebuild_extractor(Manifest("onnx", [], []), None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: no extractor given and the artifact records no model spec; ...
    """
    from fxexport.extractor import create_feature_extractor
    from fxexport.models import model_from_info, resolve_leaf_modules

    if not isinstance(manifest.model, Mapping) or not manifest.model.get("spec"):
        raise InvalidInputError(
            "no extractor given and the artifact records no model spec; pass extractor= "
            "(CLI: --model SPEC --node NODE=NAME)"
        )
    if not manifest.nodes:
        raise InvalidInputError("no extractor given and the artifact records no node map; pass extractor= "
                                "(CLI: --model SPEC --node NODE=NAME)")
    model = model_from_info(manifest.model, weights=weights, trust_model_spec=trust_model_spec)
    leaves = resolve_leaf_modules(model, manifest.model.get("leaf_modules") or [])
    extractor = create_feature_extractor(model, dict(manifest.nodes), leaf_modules=leaves or None)
    return extractor.train(manifest.mode == "train"), model


def run_reference(extractor: Callable[..., Any], input_sets: Sequence[Sequence[torch.Tensor]], mode: str,
                  manifest_names: Sequence[str]) -> list["OrderedDict[str, torch.Tensor]"]:
    """The extractor's flat outputs on each input set, in ``mode``; its mode and buffers are restored.

    In train mode batch norm updates its running statistics: they are put back afterwards,
    so verifying never changes the model.
    """
    was_training = getattr(extractor, "training", None)
    if hasattr(extractor, "train"):
        extractor.train(mode == "train")
    saved = ([(b, b.detach().clone()) for b in extractor.buffers()]
             if mode == "train" and isinstance(extractor, torch.nn.Module) else [])
    try:
        refs = []
        with torch.inference_mode():
            for inputs in input_sets:
                refs.append(flatten_reference(extractor(*inputs), manifest_names))
        return refs
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
        if was_training is not None:
            extractor.train(was_training)


def nondeterministic_outputs(extractor: Callable[..., Any], inputs: Sequence[torch.Tensor], mode: str,
                             first: Mapping[str, torch.Tensor], manifest_names: Sequence[str]) -> dict[str, str]:
    """Run the reference again on ``inputs``; per output that differs from ``first`` (its first run), how.

    Example:
        >>> class Noisy(torch.nn.Module):
        ...     def forward(self, x):
        ...         return {"noise": x + torch.rand_like(x)}
        >>> first = run_reference(Noisy(), [(torch.zeros(3),)], "eval", ["noise"])[0]
        >>> nondeterministic_outputs(Noisy(), (torch.zeros(3),), "eval", first, ["noise"])  # doctest: +ELLIPSIS
        {'noise': 'differ by up to ...'}
    """
    again = run_reference(extractor, [inputs], mode, manifest_names)[0]
    found: dict[str, str] = {}
    for name, ref in first.items():
        other = again.get(name)
        if other is None or other.shape != ref.shape:
            found[name] = "change shape between runs"
        elif not torch.equal(other, ref):
            diff = float((other.to(torch.float64) - ref.to(torch.float64)).abs().max())
            found[name] = f"differ by up to {diff:.3g}"
    return found

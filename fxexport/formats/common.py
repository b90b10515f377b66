"""What every format module shares: argument checks, dynamic dims, the eager plan, manifests,
the post-export self-check, and reading a manifest out of a zip or a sidecar file.

Format modules (:mod:`fxexport.formats.onnx`, ``.torchscript``, ...) build on these; users
call ``export_onnx`` / ``export_torchscript`` / ... instead. The self-check
(:meth:`Plan.check_artifact`, :func:`compare_outputs`) compares with
:func:`fxexport.compare.compare_tensors`, the one comparison engine verify and edge use too.

Example:
    >>> import torch
    >>> class Net(torch.nn.Module):
    ...     def forward(self, x):
    ...         return {"double": x * 2}
    >>> p = plan(Net(), torch.ones(1, 3, 8, 8), "batch", None)
    >>> p.spec.names, p.output_shapes, [tuple(i[0].shape) for i, _ in p.probe_sizes()]
    (['double'], [['batch', 3, 8, 8]], [(1, 3, 8, 8), (2, 3, 8, 8)])
    >>> p.check_artifact("a perfect copy", lambda inputs: [inputs[0] * 2])
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from fxexport._timing import phase
from fxexport.compare import Scratch, Tolerance, compare_tensors, dtype_name, single_thread
from fxexport.errors import ExportError, InvalidInputError, VerificationError, one_line
from fxexport.flatten import OutputSpec, check_example_inputs, flatten, forward_input_names
from fxexport.manifest import MAX_MANIFEST_BYTES, Manifest, TensorSpec, concrete_args_entry, current_versions
from fxexport.preprocess import export_entry

__all__ = [
    "DYNAMIC_DIMS", "SECOND_SIZE_STEP", "SELF_CHECK_RANGE", "Plan", "plan", "check_extractor", "normalize_dynamic",
    "check_input_names", "dynamic_axes", "resize", "second_sizes", "dim_sizes", "derive_output_shapes", "input_specs",
    "make_manifest", "compare_outputs", "preserved_state", "quiet", "quiet_logger", "run_eager",
    "require_file", "parse_manifest", "manifest_too_big", "decode_manifest", "open_zip", "zip_errors",
    "read_zip_member", "sidecar_path", "read_sidecar_manifest",
]

DYNAMIC_DIMS = ("batch", "height", "width")
#: how much a dynamic dim changes for the "runs at a second size" check (see :func:`second_sizes`)
SECOND_SIZE_STEP = {"batch": 1, "height": 32, "width": 64}
#: the self-check's value bound: every element within this fraction of the output's largest
#: magnitude. It catches swapped or garbage outputs, not precision (which ``verify`` measures).
SELF_CHECK_RANGE = 1e-2


def check_extractor(extractor: Any) -> nn.Module:
    """``extractor`` itself when it is an ``nn.Module``, else an :class:`InvalidInputError` that says what works.

    Example:
        >>> check_extractor("resnet18")
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: extractor must be a torch.nn.Module, got str; build one with \
fxexport.create_feature_extractor(model, {'node': 'name'})
    """
    if not isinstance(extractor, nn.Module):
        raise InvalidInputError(
            f"extractor must be a torch.nn.Module, got {type(extractor).__name__}; "
            "build one with fxexport.create_feature_extractor(model, {'node': 'name'})"
        )
    return extractor


def normalize_dynamic(dynamic: str | Iterable[str] | None) -> tuple[str, ...]:
    """``None`` / ``"batch"`` / ``"batch,height"`` / ``("batch", "width")`` -> canonical tuple.

    Example:
        >>> normalize_dynamic("width, batch")
        ('batch', 'width')
        >>> normalize_dynamic(None)
        ()
    """
    if dynamic is None:
        return ()
    if isinstance(dynamic, str):
        items = [d.strip() for d in dynamic.split(",") if d.strip()]
    elif isinstance(dynamic, Iterable):
        items = list(dynamic)
    else:
        raise InvalidInputError(
            f"dynamic={dynamic!r} is not a list of dims; use any of {', '.join(DYNAMIC_DIMS)}, e.g. ('batch',)"
        )
    for d in items:
        if d not in DYNAMIC_DIMS:
            raise InvalidInputError(f"dynamic dim {d!r} is not one of {', '.join(DYNAMIC_DIMS)}")
    return tuple(d for d in DYNAMIC_DIMS if d in items)


def check_input_names(input_names: Sequence[str] | None, default: Sequence[str], count: int) -> list[str]:
    """The artifact's input names: ``input_names`` checked (one unique non-empty name per input), else ``default``.

    Example:
        >>> check_input_names(None, ["x"], 1), check_input_names("image", ["x"], 1)
        (['x'], ['image'])
    """
    if input_names is None:
        names = list(default)
    else:
        if isinstance(input_names, str):
            input_names = [input_names]
        names = list(input_names)
        if len(names) != count:
            raise InvalidInputError(
                f"input_names={names} has {len(names)} name(s) for {count} example input(s); give one name per input"
            )
        for n in names:
            if not isinstance(n, str) or not n:
                raise InvalidInputError(f"input name {n!r} is not a non-empty string")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"input names {names} are not unique; give each input its own name")
    return names


def dynamic_axes(inputs: Sequence[torch.Tensor], dynamic: Sequence[str], input_names: Sequence[str]
                 ) -> list[dict[int, str]]:
    """Per input, ``{axis: dim name}``: batch is axis 0, height/width the last two axes.

    Each dim applies to every input that has it (height/width: inputs of 3 dims or more); a dim
    no input has is an :class:`InvalidInputError`.

    Example:
        >>> dynamic_axes([torch.zeros(1, 3, 8, 8), torch.zeros(1, 10)], ("batch", "height"), ["image", "meta"])
        [{0: 'batch', 2: 'height'}, {0: 'batch'}]
    """
    axes: list[dict[int, str]] = []
    for t, name in zip(inputs, input_names):
        a: dict[int, str] = {}
        for d in dynamic:
            if d == "batch":
                need, axis = 1, 0
            else:
                need, axis = 3, t.dim() - (2 if d == "height" else 1)
            if t.dim() < need:
                if len(inputs) > 1 and any(u.dim() >= need for u in inputs):
                    continue  # another input has it
                raise InvalidInputError(
                    f"dynamic dim '{d}' needs input '{name}' to have at least {need} dims (N, C, H, W), "
                    f"but its shape is {tuple(t.shape)}; drop '{d}' from dynamic"
                )
            a[axis] = d
        axes.append(a)
    return axes


def resize(inputs: Sequence[torch.Tensor], axes: Sequence[Mapping[int, str]], sizes: Mapping[str, int]
           ) -> tuple[torch.Tensor, ...]:
    """Inputs with each dynamic axis set to ``sizes[dim]``, filled by tiling the example's values."""
    out = []
    for t, a in zip(inputs, axes):
        for axis, dim in a.items():
            if dim in sizes and t.shape[axis] != sizes[dim]:
                n = sizes[dim]
                reps = [1] * t.dim()
                reps[axis] = -(-n // t.shape[axis])
                t = t.repeat(reps).narrow(axis, 0, n)
        out.append(t.contiguous())
    return tuple(out)


def second_sizes(example: Mapping[str, int], export: Mapping[str, int], *, smaller: bool = True) -> dict[str, int]:
    """The sizes of the self-check's second run, per dynamic dim: each differs from the example's size.

    ``smaller`` (the first choice: the check's cost grows with the size) picks the smallest
    plausible size: batch 1 (2 for a batch-1 example: the exporter traced at 2, so the example
    already runs at a size other than the traced one), a spatial dim one step
    (:data:`SECOND_SIZE_STEP`) below the exported size when at least one step remains. Otherwise,
    and with ``smaller=False`` (the fallback when the eager model refuses the smaller size),
    the exported size plus one step. Either way every dim runs at some size other than the one
    the exporter traced.

    Example:
        >>> second_sizes({"batch": 2, "height": 224, "width": 64}, {"batch": 2, "height": 224, "width": 64})
        {'batch': 1, 'height': 192, 'width': 128}
        >>> second_sizes({"batch": 1}, {"batch": 2}), second_sizes({"batch": 2}, {"batch": 2}, smaller=False)
        ({'batch': 2}, {'batch': 3})
    """
    sizes = {}
    for dim, size in export.items():
        step = SECOND_SIZE_STEP[dim]
        if smaller and dim == "batch":
            sizes[dim] = 1 if example[dim] != 1 else 2
        elif smaller and size - step >= step:
            sizes[dim] = size - step
        else:
            sizes[dim] = size + step
    return sizes


def dim_sizes(inputs: Sequence[torch.Tensor], axes: Sequence[Mapping[int, str]]) -> dict[str, int]:
    """``{dim name: size}`` of each dynamic dim in ``inputs`` (the first input that has it decides)."""
    sizes: dict[str, int] = {}
    for t, a in zip(inputs, axes):
        for axis, dim in a.items():
            sizes.setdefault(dim, int(t.shape[axis]))
    return sizes


@contextlib.contextmanager
def preserved_state(module: nn.Module) -> Iterator[None]:
    """Restore buffers (BatchNorm statistics) and train/eval flags after probing/exporting.

    Running a train-mode extractor (or tracing it) updates running statistics;
    without this an export would change the model and a second export would differ.
    """
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    modes = {name: m.training for name, m in module.named_modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in buffers and b.shape == buffers[name].shape:
                    b.copy_(buffers[name])
        if module.training != modes[""]:
            module.train(modes[""])  # through train(): a dual train/eval extractor swaps its graph there
        for name, m in module.named_modules():
            if name in modes:
                m.training = modes[name]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter deprecation/tracer chatter (fxexport checks the result itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        yield


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Raise the ``logging`` logger ``name`` to ERROR for the duration (chatty compilers, imports)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 (where C++ runtimes and converters log) to /dev/null for the duration.

    Python exceptions still raise; where there is no real fd 2 (embedded interpreters) nothing changes.

    Example:
        >>> with native_stderr_silenced():
        ...     print("stdout is untouched")
        stdout is untouched
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_eager(extractor: nn.Module, inputs: Sequence[torch.Tensor]) -> Any:
    """``extractor(*inputs)`` without autograd (timed as the ``"eager runs"`` phase, :mod:`fxexport._timing`)."""
    with phase("eager runs"), torch.no_grad():
        return extractor(*inputs)


@dataclass
class Plan:
    """Everything an exporter needs, computed once from the eager extractor."""

    extractor: nn.Module
    inputs: tuple[torch.Tensor, ...]  # the user's example
    input_names: list[str]  # names in the artifact
    arg_names: list[str]  # forward argument names (the wrapper's signature)
    dynamic: tuple[str, ...]
    axes: list[dict[int, str]]
    spec: OutputSpec
    nodes: dict[str, str]
    flat: tuple[torch.Tensor, ...]  # eager flat outputs at the user's example
    export_inputs: tuple[torch.Tensor, ...]  # example with every dynamic dim >= 2
    probes: list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None]] = field(default_factory=list)
    output_shapes: list[list[int | str]] = field(default_factory=list)
    #: outputs whose eager value changes between two runs on the same input (random ops), with the
    #: largest difference seen; found only after an artifact's value mismatch (see :meth:`compare`)
    nondeterministic: dict[str, float] = field(default_factory=dict)

    @property
    def training(self) -> bool:
        return self.extractor.training

    def probe_sizes(self) -> list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]:
        """(inputs, eager flat outputs) pairs the artifact must reproduce: the user's example
        and, when some dims are dynamic, a second size."""
        return [(self.inputs, self.flat)] + [(i, o) for i, o in self.probes]

    def check_artifact(self, what: str, run: Callable[[tuple[torch.Tensor, ...]], Any]) -> None:
        """Run a freshly written artifact (``run(inputs) -> outputs``) at every probe size and
        compare it with the eager extractor; ``what`` names it in errors
        (``"the AOTInductor package for 'x.pt2'"``)."""
        for inputs, expected in self.probe_sizes():
            try:
                with torch.no_grad():
                    got = run(inputs)
            except Exception as err:  # noqa: BLE001 - report what the runtime said
                raise ExportError(
                    f"{what} fails on inputs of shape {[tuple(t.shape) for t in inputs]}: {one_line(err)}"
                ) from err
            got = [got] if isinstance(got, torch.Tensor) else list(got)
            self.compare(what, inputs, expected, got, check_values=True)

    def compare(self, where: str, inputs: tuple[torch.Tensor, ...], expected: Sequence[torch.Tensor],
                got: Sequence[Any], *, check_values: bool, check_dtype: bool = False) -> None:
        """:func:`compare_outputs` of an artifact's outputs at ``inputs`` with the eager ones, telling a
        nondeterministic reference from a broken export.

        Only after a value mismatch does the eager extractor run again on the same inputs; an
        output that differs from its own first run (random ops such as ``torch.rand_like``) is
        then checked for name, shape and dtype only, recorded in :attr:`nondeterministic` (the
        exporters store it as ``manifest.extra["nondeterministic_outputs"]``) and warned about
        once. A mismatch of an output that the second run reproduces is a broken export
        (:class:`ExportError`). A faithful export pays nothing extra.
        """
        before = set(self.nondeterministic)
        compare_outputs(where, self.spec.names, expected, got, check_values=check_values, check_dtype=check_dtype,
                        rerun=lambda: self.rerun(inputs), unstable=self.nondeterministic)
        new = [n for n in self.spec.names if n in self.nondeterministic and n not in before]
        if new:
            warnings.warn(
                f"the extractor's output(s) {', '.join(repr(n) for n in new)} differ between two eager "
                f"runs on the same input (up to {max(self.nondeterministic[n] for n in new):.3g}): the model is "
                "nondeterministic (random ops, noise or dropout active in "
                f"{'train' if self.training else 'eval'} mode); the export is checked for their names, shapes "
                "and dtypes only, and verification will report them", stacklevel=3)

    def rerun(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The eager extractor's flat outputs at ``inputs``, computed again."""
        with preserved_state(self.extractor):
            return tuple(t.detach() for t in flatten(self.spec, run_eager(self.extractor, inputs)))

    def manifest_extra(self) -> dict[str, Any]:
        """What the self-check learned that the manifest should record: ``{"nondeterministic_outputs":
        [names in output order]}`` when some outputs are nondeterministic, else ``{}``."""
        if not self.nondeterministic:
            return {}
        return {"nondeterministic_outputs": [n for n in self.spec.names if n in self.nondeterministic]}


def plan(extractor: nn.Module, example_inputs: Any, dynamic: Any, input_names: Sequence[str] | None) -> Plan:
    """Check arguments and run the eager extractor at the example (and a second size when dynamic)."""
    check_extractor(extractor)
    inputs = check_example_inputs(example_inputs)
    dyn = normalize_dynamic(dynamic)
    arg_names = forward_input_names(extractor, len(inputs))
    names = check_input_names(input_names, arg_names, len(inputs))
    axes = dynamic_axes(inputs, dyn, names)
    try:
        outputs = run_eager(extractor, inputs)
    except Exception as err:  # noqa: BLE001 - report what the model said
        raise InvalidInputError(
            f"the extractor fails on example inputs of shape {[tuple(t.shape) for t in inputs]}: "
            f"{one_line(err)}"
        ) from err
    nodes = _nodes_map(extractor, outputs)
    spec = OutputSpec.from_outputs(outputs, nodes)
    if not len(spec):
        raise InvalidInputError("the extractor returns no tensors; ask for at least one node that produces a tensor")
    flat = tuple(t.detach() for t in flatten(spec, outputs))
    p = Plan(extractor=extractor, inputs=inputs, input_names=names, arg_names=arg_names, dynamic=dyn, axes=axes,
             spec=spec, nodes=nodes, flat=flat, export_inputs=inputs)
    if dyn:
        sizes = dim_sizes(inputs, axes)
        export_sizes = {d: max(2, s) for d, s in sizes.items()}
        p.export_inputs = resize(inputs, axes, export_sizes)
        small, second = second_sizes(sizes, export_sizes), second_sizes(sizes, export_sizes, smaller=False)
        # the smallest size first (its eager run and the artifact's run cost least); a model that refuses
        # it (too small for its strides, a batch norm in train mode at batch 1) one step above the export size
        attempts = [small] + ([second] if second != small else [])
        for k, trial in enumerate(attempts):
            second_inputs = resize(inputs, axes, trial)
            try:
                second_flat = tuple(t.detach() for t in flatten(spec, run_eager(extractor, second_inputs)))
                break
            except Exception as err:  # noqa: BLE001
                if k + 1 < len(attempts):
                    continue
                bad = []
                for d in dyn:  # which dim(s) does the eager model itself not accept?
                    try:
                        run_eager(extractor, resize(inputs, axes, {d: second[d]}))
                    except Exception:  # noqa: BLE001
                        bad.append(d)
                bad = bad or list(dyn)
                change = ", ".join(f"{d}={export_sizes[d]}->{second[d]}" for d in bad)
                raise ExportError(
                    f"dim {' and '.join(repr(d) for d in bad)} cannot be dynamic for this model: the eager "
                    f"extractor itself fails when {change} ({one_line(err, 200)}); "
                    f"export with a fixed {'/'.join(bad)} (drop it from dynamic)"
                ) from err
        p.probes.append((second_inputs, second_flat))
    p.output_shapes = derive_output_shapes(p)
    return p


def derive_output_shapes(p: Plan) -> list[list[int | str]]:
    """Output shapes with the dims that change with the dynamic inputs named.

    A dim equal to an input's dynamic dim at every probed size takes that dim's
    name (``batch``); any other changing dim is named ``<output>_dim<axis>``.
    """
    runs = p.probe_sizes()
    shapes = []
    for i, name in enumerate(p.spec.names):
        base = list(p.flat[i].shape)
        shape: list[int | str] = []
        for axis, size in enumerate(base):
            values = [tuple(out[i].shape)[axis] if axis < out[i].dim() else None for _, out in runs]
            if all(v == size for v in values):
                shape.append(int(size))
                continue
            label = f"{name}_dim{axis}"
            for dim in p.dynamic:
                if all(v == dim_sizes(ins, p.axes).get(dim) for (ins, _), v in zip(runs, values)):
                    label = dim
                    break
            shape.append(label)
        shapes.append(shape)
    return shapes


def input_specs(p: Plan) -> list[TensorSpec]:
    """The manifest's input specs: the example's shapes with each dynamic axis named."""
    specs = []
    for t, name, a in zip(p.inputs, p.input_names, p.axes):
        shape: list[int | str] = [a.get(axis, int(s)) for axis, s in enumerate(t.shape)]
        specs.append(TensorSpec(name, shape, dtype_name(t.dtype)))
    return specs


def make_manifest(p: Plan, *, fmt: str, output_shapes: Sequence[Sequence[int | str]], exporter: str,
                  opset: int | None, model_info: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None
                  ) -> Manifest:
    """The manifest of an artifact of format ``fmt`` made from plan ``p`` (the flat outputs, their shapes as the
    artifact declares them, the node map, mode, dynamic dims, versions and ``extra["output_tree"]``).

    ``model_info`` is the manifest's ``model`` entry; two keys of it are not: ``"preprocess"`` (a
    :class:`~fxexport.preprocess.Preprocess`, a ``PreprocessEntry`` or ``{field: value}`` given explicitly)
    and ``"image_input"`` (the input images feed) become ``manifest.preprocess``
    (:func:`fxexport.preprocess.export_entry`: else the spec's default). The forward arguments the
    extractor fixed while tracing become ``manifest.concrete_args``."""
    outputs = [TensorSpec(n, list(s), dtype_name(t.dtype)) for n, s, t in zip(p.spec.names, output_shapes, p.flat)]
    ext = {"output_tree": p.spec.to_tree()}
    ext.update(extra or {})
    info = dict(model_info or {})
    inputs = input_specs(p)
    pre = export_entry(info.pop("preprocess", None), inputs, spec=info.get("spec"),
                       image_input=info.pop("image_input", None))
    return Manifest(
        format=fmt,
        inputs=inputs,
        outputs=outputs,
        nodes=dict(p.nodes),
        mode="train" if p.training else "eval",
        dynamic=list(p.dynamic),
        model=info,
        exporter=exporter,
        opset=opset,
        versions=current_versions(),
        extra=ext,
        preprocess=pre,
        concrete_args=concrete_args_entry(getattr(p.extractor, "concrete_args", None),
                                          getattr(p.extractor, "auto_concrete_args", ())),
    )


def compare_outputs(where: str, names: Sequence[str], expected: Sequence[torch.Tensor], got: Sequence[Any],
                    *, check_values: bool, check_dtype: bool = False, rel: float = SELF_CHECK_RANGE,
                    rerun: Callable[[], Sequence[torch.Tensor]] | None = None,
                    unstable: dict[str, float] | None = None) -> None:
    """Check count, shapes and (loosely: this catches swapped or garbage outputs, not
    precision, which :func:`fxexport.verify` measures) values, by name.

    Values are compared by :func:`fxexport.compare.compare_tensors`: a float output passes
    when every element is within ``rel`` of the output's largest magnitude (of 1.0 for an
    all-zero output), any other dtype when it is equal. ``unstable`` names outputs known to
    be nondeterministic: their values are not compared, their dtypes are. After a value
    mismatch, ``rerun()`` (when given) recomputes ``expected``: outputs that differ from their
    first run (beyond the same loose bound) are added to ``unstable`` with the largest
    difference; a mismatching output that does not is an :class:`ExportError`. ``check_dtype``:
    every output's dtype must be the reference's (else only an unstable output's is checked: a
    runtime may widen or narrow a stable one, e.g. int64 to int32, as long as the values agree).
    The values are compared on one thread (:func:`fxexport.compare.single_thread`: memory-bound
    passes that a busy machine slows tenfold on two).

    Example:
        >>> import torch
        >>> ref = [torch.ones(2)]
        >>> compare_outputs("demo", ["y"], ref, [torch.ones(2)], check_values=True)
        >>> unstable = {}
        >>> compare_outputs("demo", ["y"], ref, [torch.zeros(2)], check_values=True,
        ...                 rerun=lambda: [torch.full((2,), 3.0)], unstable=unstable)
        >>> unstable
        {'y': 2.0}
        >>> compare_outputs("demo", ["y"], ref, [torch.zeros(2)], check_values=True)
        Traceback (most recent call last):
        fxexport.errors.ExportError: demo: output 'y' differs from the extractor's (max abs error 1 for values \
up to 1); the artifact is wrong or mislabelled
        >>> compare_outputs("demo", ["y"], ref, [torch.ones(2, dtype=torch.float64)], check_values=True,
        ...                 check_dtype=True)
        Traceback (most recent call last):
        fxexport.errors.ExportError: demo: output 'y' has dtype float64, the extractor gives float32
    """
    if len(got) != len(expected):
        raise ExportError(f"{where}: {len(got)} outputs, expected {len(expected)} ({list(names)})")
    unstable = {} if unstable is None else unstable
    got = [torch.as_tensor(v) for v in got]
    for name, ref, val in zip(names, expected, got):
        if tuple(val.shape) != tuple(ref.shape):
            raise ExportError(
                f"{where}: output '{name}' has shape {tuple(val.shape)}, the extractor gives {tuple(ref.shape)}"
            )
        if check_dtype and val.dtype != ref.dtype:
            raise ExportError(f"{where}: output '{name}' has dtype {dtype_name(val.dtype)}, "
                              f"the extractor gives {dtype_name(ref.dtype)}")
    if not check_values:
        return
    scratch = Scratch()
    with phase("compare"), single_thread():
        mismatches = [(name, why) for name, ref, val in zip(names, expected, got)
                      if name not in unstable and (why := _value_mismatch(name, ref, val, rel, scratch)) is not None]
    if mismatches and rerun is not None:
        again = list(rerun())
        with phase("compare"), single_thread():
            for name, ref, other in zip(names, expected, again):
                if name in unstable or tuple(other.shape) != tuple(ref.shape):
                    continue
                check = _self_check(name, ref, other, rel, scratch)
                if not check.ok:
                    unstable[name] = float(check.max_abs or 0.0)
        mismatches = [(name, why) for name, why in mismatches if name not in unstable]
    if mismatches:
        name, why = mismatches[0]
        raise ExportError(f"{where}: output '{name}' differs from the extractor's{why}")
    for name, ref, val in zip(names, expected, got):
        if name in unstable and val.dtype != ref.dtype:
            raise ExportError(
                f"{where}: output '{name}' has dtype {dtype_name(val.dtype)}, "
                f"the extractor gives {dtype_name(ref.dtype)}"
            )


def _self_check(name: str, ref: torch.Tensor, val: torch.Tensor, rel: float, scratch: Scratch):
    """:func:`compare_tensors` with the self-check's bound (see :func:`compare_outputs`); dtypes are not compared."""
    ref, val = ref.detach(), val.detach()
    if ref.is_complex() or val.is_complex():  # compare real and imaginary parts as floats
        ref, val = torch.view_as_real(ref.to(torch.complex128)), torch.view_as_real(val.to(torch.complex128))
    if ref.is_floating_point():
        # every element within rel * max|ref| (range_atol); an all-zero reference allows rel itself
        zero = ref.numel() == 0 or not bool(ref.any())
        tol = Tolerance(rtol=0.0, atol=rel if zero else 0.0, range_atol=rel, check_dtype=False, dtype_floor=False)
    else:
        tol = Tolerance(rtol=0.0, atol=0.0, check_dtype=False, dtype_floor=False)  # exact
    return compare_tensors(name, ref, val, tol, _scratch=scratch)


def _value_mismatch(name: str, ref: torch.Tensor, val: torch.Tensor, rel: float, scratch: Scratch) -> str | None:
    """Why ``val`` is not ``ref`` within the self-check's bound (None when it is)."""
    check = _self_check(name, ref, val, rel, scratch)
    if check.ok:
        return None
    if not ref.is_floating_point():
        return ""
    scale = (check.atol or 0.0) / rel if rel else 0.0
    return (f" (max abs error {check.max_abs:.3g} for values up to {scale:.3g}); "
            "the artifact is wrong or mislabelled")


def _nodes_map(extractor: nn.Module, outputs: Mapping[str, Any]) -> dict[str, str]:
    nodes = getattr(extractor, "return_nodes_map", None)
    if isinstance(nodes, Mapping) and nodes:
        return {str(k): str(v) for k, v in nodes.items()}
    return {str(k): str(k) for k in outputs} if isinstance(outputs, Mapping) else {}


# -- reading manifests out of files (used by the format modules' read_manifest) -------------------


def require_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it is an existing file, else a :class:`VerificationError` saying which it is not.

    Example:
        >>> require_file("missing.onnx")
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'missing.onnx' does not exist
    """
    p = Path(path)
    if not p.exists():
        raise VerificationError(f"artifact '{path}' does not exist")
    if not p.is_file():
        raise VerificationError(f"artifact '{path}' is not a file")
    return p


def parse_manifest(text: str | bytes, path: str | os.PathLike) -> Manifest:
    """:meth:`Manifest.from_json` of untrusted text read from ``path``; its errors name the file.

    Example:
        >>> parse_manifest("{not json", "m.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.VerificationError: artifact 'm.pt': manifest is not valid JSON: ...
    """
    try:
        return Manifest.from_json(text)
    except VerificationError as err:
        raise VerificationError(f"artifact '{path}': {err}") from None


def manifest_too_big(path: str | os.PathLike, size: int, where: str) -> VerificationError:
    """The error for a manifest over :data:`~fxexport.manifest.MAX_MANIFEST_BYTES` found at ``where`` in ``path``."""
    return VerificationError(
        f"artifact '{path}' has a {size}-byte fxexport manifest ({where}); a manifest is at most "
        f"{MAX_MANIFEST_BYTES} bytes (1 MiB), so it is refused unread"
    )


def decode_manifest(data: bytes, path: str | os.PathLike) -> str:
    """Manifest bytes as text; bytes that are not UTF-8 are a :class:`VerificationError` naming ``path``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise VerificationError(f"artifact '{path}' has a malformed fxexport manifest: not UTF-8 text "
                                f"({one_line(err, 200, typed=False)})") from None


def open_zip(path: str | os.PathLike, what: str):
    """``zipfile.ZipFile(path)``; a file that is not a readable zip is a :class:`VerificationError` naming ``what``."""
    import zipfile

    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise VerificationError(f"artifact '{path}' is not a readable {what}: {one_line(err, 200, typed=False)}"
                                ) from None


def zip_errors() -> tuple[type[BaseException], ...]:
    """The exceptions reading a damaged zip member can raise (catch them and name the file)."""
    import zipfile
    import zlib

    return (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError, KeyError, zlib.error)


def read_zip_member(zf: Any, name: str, path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of member ``name`` of the open zip ``zf``; one over ``limit`` bytes is refused unread
    (by its declared size, and again while reading in case the header lies)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise manifest_too_big(path, info.file_size, name)
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise manifest_too_big(path, len(data), name)
    return data


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the manifest of a format without room for one inside the file goes: ``<file>.json``.

    Example:
        >>> str(sidecar_path("out/r18.pte"))
        'out/r18.pte.json'
    """
    return Path(str(path) + ".json")


def read_sidecar_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest in ``<path>.json`` (:func:`sidecar_path`), or None when there is no such file.

    The file is untrusted: one over :data:`~fxexport.manifest.MAX_MANIFEST_BYTES` is refused
    unread, and every field is checked (:meth:`Manifest.from_dict`).
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        size = sidecar.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise manifest_too_big(path, size, sidecar.name)
        with open(sidecar, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise VerificationError(f"artifact '{path}': cannot read its manifest '{sidecar}': "
                                f"{one_line(err, 200, typed=False)}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise manifest_too_big(path, len(data), sidecar.name)
    return parse_manifest(decode_manifest(data, path), path)

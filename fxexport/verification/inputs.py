"""The inputs :func:`fxexport.verify` runs on: seeded random sets from a manifest, the caller's own, or a folder.

The manifest is untrusted, so the shapes it asks for are planned (and refused when
absurd: see :func:`input_budget`) before anything is allocated. A folder
(:func:`load_input_folder`, also what ``optimize(calibration=DIR)`` reads) holds one sample
per file: images (JPEG/PNG, decoded and preprocessed by :mod:`fxexport.preprocess` for the
model's image input), ``.npz`` files with one array per input name, or ``.npy`` files for a
model with one input.

Example:
    >>> from fxexport.manifest import Manifest, TensorSpec
    >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 8, 8])], [])
    >>> plan_inputs(m, n_inputs=2)
    [[[1, 3, 8, 8]], [[3, 3, 8, 8]]]
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fxexport.errors import InvalidInputError, VerificationError, one_line
from fxexport.manifest import Manifest, TensorSpec
from fxexport.preprocess import Preprocess, PreprocessEntry, image_input_index, is_image, load_image

__all__ = [
    "make_inputs",
    "normalize_inputs",
    "load_input_folder",
    "folder_files",
    "folder_has_images",
    "plan_inputs",
    "input_budget",
    "artifact_bytes",
    "fits",
    "example_shapes",
    "n_dynamic",
    "torch_dtype",
    "DEFAULT_BATCH_SIZES",
    "DYNAMIC_DIM_STEP",
    "DEFAULT_SPATIAL",
    "MAX_RANDOM_INPUT_BYTES",
    "INPUT_BYTES_PER_ARTIFACT_BYTE",
]

# Sizes checked for a dynamic dim when the caller gives none. Batch 1 and 3 both
# differ from the batch-2 example exports use, so a batch baked in at export shows up.
DEFAULT_BATCH_SIZES = (1, 3)
# For other dynamic dims (height, width, sequence): the base size and base + this.
DYNAMIC_DIM_STEP = 32
DEFAULT_SPATIAL = 224

#: Random inputs are refused above the larger of this and INPUT_BYTES_PER_ARTIFACT_BYTE x the artifact's size
#: (see :func:`input_budget`): a 2 KB file whose manifest says ``[100000, 100000, 3]`` gets one line, not 120 GB.
MAX_RANDOM_INPUT_BYTES = 256 << 20
INPUT_BYTES_PER_ARTIFACT_BYTE = 64

_TORCH_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a manifest dtype name.

    Raises:
        InvalidInputError: not a dtype verify can make random inputs of.

    Example:
        >>> torch_dtype("float16"), torch_dtype("torch.int64")
        (torch.float16, torch.int64)
    """
    try:
        return _TORCH_DTYPES[str(name).replace("torch.", "")]
    except KeyError:
        raise InvalidInputError(f"manifest input dtype '{name}' is not one verify can generate; pass inputs=") from None


def _dim_sizes(spec: TensorSpec, axis: int, dim: str, sizes: Mapping[str, Sequence[int]],
               base_shape: Sequence[int] | None) -> list[int]:
    if dim in sizes:
        values = [int(v) for v in sizes[dim]]
        if not values or min(values) < 1:
            raise InvalidInputError(f"sizes['{dim}'] must be a non-empty list of positive ints, got {sizes[dim]!r}")
        return values
    if dim == "batch" or axis == 0:
        return list(DEFAULT_BATCH_SIZES)
    base = None
    if base_shape is not None and axis < len(base_shape) and isinstance(base_shape[axis], int):
        base = int(base_shape[axis])
    if base is None:
        base = DEFAULT_SPATIAL
    return [base, base + DYNAMIC_DIM_STEP]


def input_budget(paths: Sequence[str | Path]) -> int:
    """Most bytes of random inputs :func:`fxexport.verify` makes for these artifacts.

    The larger of :data:`MAX_RANDOM_INPUT_BYTES` (256 MiB) and
    :data:`INPUT_BYTES_PER_ARTIFACT_BYTE` (64) times their size on disk (companion
    files such as an ONNX file's external data included): a real model's inputs are
    small next to its weights, so a manifest asking for more describes no model this
    file could be. The limit holds for explicit ``sizes=`` too (static dims still come
    from the manifest); callers who want more pass their own ``inputs=``.

    Example:
        >>> input_budget([]) == 256 * 2**20
        True
    """
    total = sum(artifact_bytes(p) for p in paths)
    return max(MAX_RANDOM_INPUT_BYTES, INPUT_BYTES_PER_ARTIFACT_BYTE * total)


def artifact_bytes(path: str | Path) -> int:
    """Bytes on disk of an artifact and of the companion files its format reads with it (0 if it is missing).

    Companions come from the format module's optional ``external_files(path)`` (an ONNX
    file's external data).

    Example:
        >>> artifact_bytes("missing.onnx")
        0
    """
    from fxexport.formats import for_path

    p = Path(path)
    if not p.is_file():
        return 0
    companions = getattr(for_path(p), "external_files", None)
    extra = companions(p) if companions is not None else []
    return p.stat().st_size + sum(Path(f).stat().st_size for f in extra if Path(f).is_file())


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def plan_inputs(manifest: Manifest, *, n_inputs: int = 3, sizes: Mapping[str, Sequence[int]] | None = None,
                base_shapes: Sequence[Sequence[int]] | None = None,
                max_bytes: int | None = MAX_RANDOM_INPUT_BYTES) -> list[list[list[int]]]:
    """The shapes :func:`make_inputs` would make (one list of input shapes per set), allocating nothing.

    Raises:
        VerificationError: the sets would take more than ``max_bytes`` (None: no limit);
            the one-line message names the largest input and says what to pass instead.
        InvalidInputError: bad ``n_inputs`` / ``sizes``.

    Example:
        >>> from fxexport.manifest import Manifest, TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", [100000, 100000, 3])], [])
        >>> plan_inputs(m)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.VerificationError: random inputs for this manifest would take 335.3 GB ...
    """
    if n_inputs < 1:
        raise InvalidInputError(f"n_inputs must be >= 1, got {n_inputs}")
    if not manifest.inputs:
        raise VerificationError("the artifact's manifest lists no inputs; pass inputs= explicitly")
    sizes = dict(sizes or {})
    if base_shapes is None:
        base_shapes = manifest.extra.get("example_shapes") if isinstance(manifest.extra, dict) else None
    per_dim: dict[str, list[int]] = {}
    for k, spec in enumerate(manifest.inputs):
        base = base_shapes[k] if base_shapes is not None and k < len(base_shapes) else None
        for axis, dim in spec.dynamic_dims.items():
            if dim not in per_dim:
                per_dim[dim] = _dim_sizes(spec, axis, dim, sizes, base)
    unknown = sorted(set(sizes) - set(per_dim))
    if unknown:
        raise InvalidInputError(
            f"sizes given for {unknown}, which are not dynamic dims of the artifact "
            f"(dynamic: {sorted(per_dim) or 'none'})"
        )
    count = max([n_inputs] + [len(v) for v in per_dim.values()])
    plan = [[[per_dim[d][i % len(per_dim[d])] if isinstance(d, str) else int(d) for d in spec.shape]
             for spec in manifest.inputs] for i in range(count)]
    if max_bytes is not None:
        _check_budget(manifest, plan, per_dim, max_bytes)
    return plan


def _check_budget(manifest: Manifest, plan: list[list[list[int]]], per_dim: Mapping[str, list[int]],
                  max_bytes: int) -> None:
    itemsize = [torch_dtype(spec.dtype).itemsize for spec in manifest.inputs]

    def nbytes(shape: Sequence[int], k: int) -> int:
        return math.prod(shape) * itemsize[k]

    total = sum(nbytes(shape, k) for shapes in plan for k, shape in enumerate(shapes))
    if total <= max_bytes:
        return
    k, shape = max(((k, shape) for shapes in plan for k, shape in enumerate(shapes)), key=lambda e: nbytes(*e[::-1]))
    spec = manifest.inputs[k]
    smallest = sum(nbytes([1 if isinstance(d, str) else d for d in s.shape], j) for j, s in enumerate(manifest.inputs))
    hint = "pass inputs= (your own tensors)"
    if per_dim and smallest <= max_bytes:
        now = ", ".join(f"{d}={v}" for d, v in per_dim.items())
        example = ", ".join(f"{d!r}: [1]" for d in per_dim)
        hint += f" or smaller sizes= for the dynamic dims (now {now}), e.g. sizes={{{example}}}"
    elif per_dim:
        hint += " (its static dims alone are over the limit)"
    raise VerificationError(
        f"random inputs for this manifest would take {_human_bytes(total)} ({len(plan)} set(s); input "
        f"'{spec.name}' is {spec.dtype} {list(shape)}, {_human_bytes(nbytes(shape, k))}), over the "
        f"{_human_bytes(max_bytes)} limit (verify makes at most the larger of {_human_bytes(MAX_RANDOM_INPUT_BYTES)} "
        f"and {INPUT_BYTES_PER_ARTIFACT_BYTE}x the artifact's size): {hint}"
    )


def make_inputs(manifest: Manifest, *, n_inputs: int = 3, sizes: Mapping[str, Sequence[int]] | None = None,
                seed: int = 0, base_shapes: Sequence[Sequence[int]] | None = None,
                max_bytes: int | None = MAX_RANDOM_INPUT_BYTES) -> list[tuple[torch.Tensor, ...]]:
    """Seeded random input sets matching ``manifest.inputs``.

    Static dims come from the manifest. A dynamic dim takes its values from
    ``sizes[dim_name]`` if given, else batch dims take 1 and 3, and other dynamic
    dims (``height``, ``width``) the example size (``base_shapes``: one shape per
    input, ints where known; else the manifest's ``extra["example_shapes"]``; else
    224) and that plus 32. Input set ``i`` uses the ``i``-th value of every list
    (cycling); there are ``max(n_inputs, longest list)`` sets so every size is
    checked. Float inputs are standard normal, integer inputs uniform in [0, 10),
    bool inputs random.

    The manifest is untrusted: sets over ``max_bytes`` in all (default 256 MiB;
    :func:`fxexport.verify` allows :func:`input_budget`; None: no limit) are refused
    before anything is allocated (see :func:`plan_inputs`).

    Example:
        >>> from fxexport.manifest import Manifest, TensorSpec
        >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 8, 8])], [])
        >>> [tuple(s[0].shape) for s in make_inputs(m, n_inputs=3)]
        [(1, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)]
    """
    plan = plan_inputs(manifest, n_inputs=n_inputs, sizes=sizes, base_shapes=base_shapes, max_bytes=max_bytes)
    gen = torch.Generator().manual_seed(int(seed))
    sets = []
    for shapes in plan:
        tensors = []
        for spec, shape in zip(manifest.inputs, shapes):
            dtype = torch_dtype(spec.dtype)
            if dtype.is_floating_point:
                t = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
            elif dtype == torch.bool:
                t = torch.randint(0, 2, shape, generator=gen).bool()
            else:
                t = torch.randint(0, 10, shape, generator=gen, dtype=dtype)
            tensors.append(t)
        sets.append(tuple(tensors))
    return sets


def normalize_inputs(inputs: Any, n_expected: int) -> list[tuple[torch.Tensor, ...]]:
    """User inputs -> input sets: a tensor or a tuple is one set; a list is a list of sets.

    Raises:
        InvalidInputError: empty, a non-tensor, or a set with the wrong number of tensors.

    Example:
        >>> x = torch.zeros(1, 3)
        >>> [len(s) for s in normalize_inputs([x, (x,)], 1)]
        [1, 1]
        >>> normalize_inputs([(x, x)], 1)
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: input set #0 has 2 tensor(s); the artifact takes 1
    """
    if isinstance(inputs, torch.Tensor):
        sets = [(inputs,)]
    elif isinstance(inputs, tuple):
        sets = [tuple(inputs)]
    elif isinstance(inputs, list):
        sets = [(s,) if isinstance(s, torch.Tensor) else tuple(s) for s in inputs]
    else:
        raise InvalidInputError(
            "inputs must be a tensor, a tuple of tensors (one input set) or a list of those, "
            f"got {type(inputs).__name__}"
        )
    if not sets:
        raise InvalidInputError("inputs is empty; give at least one input set or leave it out for random inputs")
    for i, s in enumerate(sets):
        if not all(isinstance(t, torch.Tensor) for t in s):
            raise InvalidInputError(f"input set #{i} holds a non-tensor; every input must be a torch.Tensor")
        if n_expected and len(s) != n_expected:
            raise InvalidInputError(f"input set #{i} has {len(s)} tensor(s); the artifact takes {n_expected}")
    return sets


def n_dynamic(manifest: Manifest) -> int:
    """How many dynamic dims the manifest's inputs have.

    Example:
        >>> n_dynamic(Manifest("onnx", [TensorSpec("x", ["batch", 3, "height", 8])], []))
        2
    """
    return sum(len(spec.dynamic_dims) for spec in manifest.inputs)


def fits(manifest: Manifest, inputs: Sequence[torch.Tensor]) -> bool:
    """Whether ``inputs`` have the ranks and static sizes ``manifest`` declares.

    Example:
        >>> m = Manifest("onnx", [TensorSpec("x", ["batch", 3])], [])
        >>> fits(m, [torch.zeros(5, 3)]), fits(m, [torch.zeros(5, 4)])
        (True, False)
    """
    if len(inputs) != len(manifest.inputs):
        return False
    for spec, t in zip(manifest.inputs, inputs):
        if len(spec.shape) != t.dim():
            return False
        if any(isinstance(d, int) and d != t.shape[k] for k, d in enumerate(spec.shape)):
            return False
    return True


def example_shapes(manifests: Sequence[Manifest]) -> list[list[int | None]] | None:
    """Example sizes of the first manifest's dynamic dims: the recorded ones, else a static size
    another artifact has there (``None`` where nothing says).

    Example:
        >>> dyn = Manifest("onnx", [TensorSpec("x", ["batch", 3, "h"])], [])
        >>> example_shapes([dyn, Manifest("onnx", [TensorSpec("x", [2, 3, 64])], [])])
        [[2, 3, 64]]
    """
    recorded = (manifests[0].extra or {}).get("example_shapes")
    if recorded:
        return [list(s) for s in recorded]
    shapes: list[list[int | None]] = []
    for k, spec in enumerate(manifests[0].inputs):
        shape: list[int | None] = []
        for axis, dim in enumerate(spec.shape):
            known = None
            for m in manifests[1:]:
                if k < len(m.inputs) and axis < len(m.inputs[k].shape) and isinstance(m.inputs[k].shape[axis], int):
                    known = int(m.inputs[k].shape[axis])
                    break
            shape.append(dim if isinstance(dim, int) else known)
        shapes.append(shape)
    return shapes


# ----------------------------------------------------------------------------- a folder of samples

_ARRAY_SUFFIXES = (".npy", ".npz")


def folder_files(folder: str | os.PathLike, what: str = "inputs") -> list[Path]:
    """The sample files of a folder (``.npy``, ``.npz``, ``.jpg``, ``.jpeg``, ``.png``), in name order.

    Raises:
        InvalidInputError: not a folder, or none of those files in it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{what} folder '{root}' does not exist or is not a folder")
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and (p.suffix.lower() in _ARRAY_SUFFIXES or is_image(p)))
    if not files:
        raise InvalidInputError(f"{what} folder '{root}' holds no .npy or .npz files and no images "
                                "(.jpg, .jpeg, .png)")
    return files


def folder_has_images(folder: str | os.PathLike) -> bool:
    """Whether a folder holds image files (so a preprocessing record is needed)."""
    root = Path(folder)
    return root.is_dir() and any(p.is_file() and is_image(p) for p in root.iterdir())


def load_input_folder(folder: str | os.PathLike, manifest: Manifest, *,
                      preprocess: Preprocess | PreprocessEntry | None = None, image_input: str | None = None,
                      what: str = "inputs") -> list[tuple[torch.Tensor, ...]]:
    """Input sets from a folder, one sample per file in name order, in ``manifest.inputs`` order.

    * an image (``.jpg``, ``.jpeg``, ``.png``) feeds the model's image input (the one named
      ``image_input``, else the only ``(N, 3, H, W)`` input), decoded and preprocessed by
      ``preprocess`` (default: :class:`~fxexport.preprocess.Preprocess`'s plain record); a model
      with other inputs too needs ``.npz`` files;
    * an ``.npz`` holds one array per input name;
    * an ``.npy`` holds the one input of a one-input model.

    Each array must match its input: static dims equal, dynamic dims any size; a stack ``(N, ...)``
    for an input whose batch is fixed to 1 is split into N samples; float arrays are cast to the
    input's float dtype. ``what`` names the folder in messages (``"calibration"`` for optimize).

    Raises:
        InvalidInputError: the folder is missing or empty, or a file does not fit (one line naming the
            file, its shape and the expected one).

    Example:
        >>> import tempfile, numpy as np, pathlib
        >>> m = Manifest("onnx", [TensorSpec("a", ["batch", 2]), TensorSpec("b", ["batch", 3])], [])
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> np.savez(d / "s0.npz", a=np.zeros((1, 2), np.float32), b=np.ones((1, 3), np.float32))
        >>> [[tuple(t.shape) for t in s] for s in load_input_folder(d, m)]
        [[(1, 2), (1, 3)]]
    """
    files = folder_files(folder, what)
    specs = manifest.inputs
    names = [s.name for s in specs]
    entry = preprocess if isinstance(preprocess, PreprocessEntry) else None
    record = entry.record if entry is not None else (preprocess or Preprocess())
    if image_input is None and entry is not None:
        image_input = entry.input
    word = what[:-1] if what.endswith("s") else what
    sets: list[tuple[torch.Tensor, ...]] = []
    for f in files:
        if is_image(f):
            k = image_input_index(specs, image_input)
            if len(specs) != 1:
                others = [n for j, n in enumerate(names) if j != k]
                raise InvalidInputError(
                    f"{word} image '{f}' feeds input '{names[k]}' only, but the model also takes {others}: "
                    "give .npz files with one array per input name instead")
            x = load_image(f, record)
            spec = specs[k]
            if not _fits(spec, x.shape):
                raise InvalidInputError(
                    f"{word} image '{f}' is {tuple(x.shape)} after preprocessing ({record.describe()}); input "
                    f"'{spec.name}' expects {_shape_text(spec)}: set the size with --resize/--crop (preprocess=)")
            sets.append((_to_dtype(f, spec, x, word),))
            continue
        try:
            loaded = np.load(f, allow_pickle=False)
        except Exception as err:  # noqa: BLE001
            raise InvalidInputError(f"{word} file '{f}' is not a readable numpy file: {one_line(err)}") from err
        if isinstance(loaded, np.ndarray):
            if len(specs) != 1:
                raise InvalidInputError(
                    f"{word} file '{f}' holds one array but the model takes {len(specs)} inputs {names}; "
                    "save each sample as an .npz with those keys"
                )
            arrays = {names[0]: loaded}
        else:
            with loaded:
                keys = list(loaded.files)
                if sorted(keys) != sorted(names):
                    raise InvalidInputError(f"{word} file '{f}' has arrays {keys}; the model's inputs are {names}")
                arrays = {k: loaded[k] for k in names}
        per_input = [_samples(f, spec, arrays[spec.name], word) for spec in specs]
        counts = {len(p) for p in per_input}
        if len(counts) != 1:
            raise InvalidInputError(f"{word} file '{f}' holds different sample counts per input")
        for i in range(counts.pop()):
            sets.append(tuple(torch.from_numpy(p[i]) for p in per_input))
    return sets


def _shape_text(spec: TensorSpec) -> str:
    return "(" + ", ".join(str(d) for d in spec.shape) + ")"


def _fits(spec: TensorSpec, shape: Sequence[int]) -> bool:
    return len(shape) == len(spec.shape) and all(isinstance(d, str) or d == s for d, s in zip(spec.shape, shape))


def _to_dtype(f: Path, spec: TensorSpec, x: torch.Tensor, word: str) -> torch.Tensor:
    dtype = torch_dtype(spec.dtype)
    if not dtype.is_floating_point:
        raise InvalidInputError(f"{word} image '{f}' decodes to float32 but input '{spec.name}' is {spec.dtype}")
    return x.to(dtype)


def _samples(f: Path, spec: TensorSpec, arr: np.ndarray, word: str) -> list[np.ndarray]:
    """One array as the samples it holds for ``spec`` (checked, cast, contiguous)."""
    got = "(" + ", ".join(str(d) for d in arr.shape) + ")"
    if _fits(spec, arr.shape):
        samples = [arr]
    elif (arr.ndim == len(spec.shape) and spec.shape and spec.shape[0] == 1 and arr.shape[0] > 1
          and _fits(spec, (1,) + arr.shape[1:])):
        samples = [arr[i:i + 1] for i in range(arr.shape[0])]
    else:
        raise InvalidInputError(f"{word} file '{f}' has shape {got}; input '{spec.name}' expects {_shape_text(spec)}")
    want = np.dtype(spec.dtype) if spec.dtype != "bool" else np.dtype(bool)
    if arr.dtype != want:
        if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(want, np.floating):
            samples = [s.astype(want) for s in samples]
        else:
            raise InvalidInputError(
                f"{word} file '{f}' has dtype {arr.dtype}; input '{spec.name}' expects {spec.dtype}")
    return [np.ascontiguousarray(s) for s in samples]

"""Build the C++ example program (``scripts/cpp/fxexport_infer.cpp``) once and cache it.

The program runs a TorchScript (``.pt``) or AOTInductor (``.pt2``) artifact from
C++ against the libtorch inside the installed torch wheel (see
``scripts/cpp/README`` in the README's "Use from C++" section). Compiling it takes
tens of seconds, so :func:`build_cpp_example` keeps the binary in a cache folder,
under a key made of the sources (the .cpp and ``scripts/cpp/fxexport_common.hpp``, the
header both programs share), the compile command, the compiler and the torch
build; it rebuilds only when one of them changes.

The compile line is a plain one, because ``find_package(Torch)`` stops on a CUDA
wheel without a CUDA toolkit::

    c++ -std=c++20 -D_GLIBCXX_USE_CXX11_ABI=1 -I torch/include -I torch/include/torch/csrc/api/include \\
        fxexport_infer.cpp -L torch/lib -Wl,-rpath,torch/lib -ltorch -ltorch_cpu -lc10

(``-ltorch`` matters: without it an AOTInductor package fails to dlopen
``libtorch.so``.) ``scripts/cpp/CMakeLists.txt`` is the same build for a CPU
torch or a libtorch download.

The OpenVINO program (``scripts/cpp/fxexport_openvino.cpp``) runs fxexport's
``.onnx`` files and OpenVINO IRs (``.xml``) against the C++ SDK inside the
``openvino`` wheel; :func:`build_openvino_example` builds and caches it the same
way, with the compile line::

    c++ -O2 -std=c++17 fxexport_openvino.cpp -I openvino/include \\
        -L openvino/libs -l:libopenvino.so.<ver> -Wl,-rpath,openvino/libs

Example:
    >>> from fxexport.cpp import compile_command, openvino_compile_command
    >>> cmd = compile_command("fxexport_infer.cpp", "fxexport_infer")
    >>> "-std=c++20" in cmd and "-ltorch" in cmd
    True
    >>> cmd = openvino_compile_command("fxexport_openvino.cpp", "fxexport_openvino")
    >>> "-std=c++17" in cmd and any(c.startswith("-l:libopenvino.so.") for c in cmd)
    True
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fxexport._io import atomic_path
from fxexport.errors import FxExportError, InvalidInputError

if TYPE_CHECKING:
    from collections import OrderedDict

    import numpy

__all__ = ["build_cpp_example", "cached_binary_path", "compile_command", "default_cache_dir", "source_dir",
           "run_cpp_example", "build_openvino_example", "cached_openvino_binary_path", "openvino_compile_command",
           "openvino_sdk", "run_openvino_example", "RUNTIMES", "ProgramRun", "build_example", "run_example"]

PROGRAM = "fxexport_infer"
#: the header both programs include (``#include "fxexport_common.hpp"``, found beside the .cpp, so
#: the compile lines need no ``-I`` for it); it is hashed into both cache keys.
COMMON_HEADER = "fxexport_common.hpp"
SOURCES = ("fxexport_infer.cpp", COMMON_HEADER)  # the first is what the compiler is given
OPENVINO_PROGRAM = "fxexport_openvino"
OPENVINO_SOURCES = ("fxexport_openvino.cpp", COMMON_HEADER)


def source_dir() -> Path:
    """``scripts/cpp`` of the fxexport checkout (the sources are not part of the wheel)."""
    here = Path(__file__).resolve().parent.parent / "scripts" / "cpp"
    if not (here / SOURCES[0]).exists():
        raise FxExportError(
            f"the C++ example sources are not at '{here}'; they ship in the fxexport repository's scripts/cpp, "
            "not in the installed package: run from a checkout (pip install -e .)"
        )
    return here


def default_cache_dir() -> Path:
    """``$FXEXPORT_CACHE_DIR/cpp``, else ``$XDG_CACHE_HOME/fxexport/cpp`` (``~/.cache/fxexport/cpp``)."""
    root = os.environ.get("FXEXPORT_CACHE_DIR")
    if root:
        return Path(root) / "cpp"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fxexport" / "cpp"


def _torch_paths() -> tuple[Path, Path]:
    import torch

    root = Path(torch.__file__).resolve().parent
    return root / "include", root / "lib"


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise FxExportError("no C++ compiler found: install g++ (apt-get install g++) or set CXX")
    return cxx


def compile_command(source: str | os.PathLike, output: str | os.PathLike, *, cxx: str | None = None,
                    opt: str = "-O2") -> list[str]:
    """The compiler command line that builds ``source`` into ``output`` against the installed torch."""
    import torch

    include, lib = _torch_paths()
    abi = int(torch.compiled_with_cxx11_abi())
    return [
        cxx or _compiler(), opt, "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-I", str(include), "-I", str(include / "torch" / "csrc" / "api" / "include"),
        str(source), "-o", str(output),
        "-L", str(lib), f"-Wl,-rpath,{lib}", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10",
    ]


def _torch_build_id() -> str:
    import torch

    _, lib = _torch_paths()
    stat = (lib / "libtorch_cpu.so").stat() if (lib / "libtorch_cpu.so").exists() else None
    return f"{torch.__version__}|{torch.version.git_version}|{stat and stat.st_size}"


def _cache_key(cmd: list[str], sources: list[Path], build_id: str | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(cmd[1:]).encode())
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    digest.update((build_id if build_id is not None else _torch_build_id()).encode())
    try:
        version = subprocess.run([cmd[0], "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = cmd[0]
    digest.update(version.encode())
    return digest.hexdigest()[:16]


def cached_binary_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`build_cpp_example` keeps the program for the current sources, compiler and torch."""
    sources = [source_dir() / s for s in SOURCES]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache / f"{PROGRAM}-{_cache_key(compile_command(sources[0], 'OUT'), sources)}"


def build_cpp_example(cache_dir: str | os.PathLike | None = None, *, force: bool = False,
                      verbose: bool = False) -> Path:
    """Path to the built ``fxexport_infer`` program, compiling it only when needed.

    The binary lives at ``<cache_dir>/fxexport_infer-<key>``, where the key hashes
    the sources (``fxexport_infer.cpp`` and ``fxexport_common.hpp``), the compile
    command, the compiler's version and the torch build; a cached binary is
    reused as long as none of them changed. The binary is written atomically,
    so concurrent builds are safe (the last one wins).

    Args:
        cache_dir: where to keep it (default :func:`default_cache_dir`).
        force: rebuild even when a cached binary exists.
        verbose: print the compile command and the time it took to stderr.

    Raises:
        FxExportError: no compiler, or the compile failed (the message holds the
            compiler's first errors).
    """
    return _build(PROGRAM, cached_binary_path(cache_dir), [source_dir() / s for s in SOURCES], compile_command,
                  force=force, verbose=verbose)


def _build(program: str, binary: Path, sources: list[Path], command, *, force: bool, verbose: bool) -> Path:
    if binary.exists() and not force:  # renamed into place whole, so complete
        if not os.access(binary, os.X_OK):
            os.chmod(binary, os.stat(binary).st_mode | 0o111)
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(binary, suffix="") as tmp:
        cmd = command(sources[0], tmp)
        if verbose:
            print(f"fxexport: building {program}:", " ".join(cmd), file=sys.stderr)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "error" in line][:5] or proc.stderr.splitlines()[-5:]
            raise FxExportError(f"building {program} failed ({' '.join(cmd[:1])} exit {proc.returncode}): "
                                + " | ".join(errors))
    # atomic_path gives the file the umask's plain-file mode on rename: make it executable after.
    os.chmod(binary, os.stat(binary).st_mode | 0o111)
    if verbose:
        print(f"fxexport: built {binary} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return binary


def run_cpp_example(artifact: str | os.PathLike, inputs, out_dir: str | os.PathLike, *,
                    binary: str | os.PathLike | None = None, threads: int | None = None,
                    timeout: float = 600) -> OrderedDict[str, numpy.ndarray]:
    """Run ``artifact`` in the C++ program and read its outputs back, by name.

    Args:
        artifact: a ``.pt`` (TorchScript) or ``.pt2`` (AOTInductor) file from fxexport.
        inputs: a tensor / numpy array, or a list of them (written as .npy into ``out_dir``).
        out_dir: folder for the inputs and the program's outputs (``out_dir/outputs``).
        binary: the program (default: :func:`build_cpp_example`).
        threads: intra-op threads for the program.

    Returns:
        ``OrderedDict`` flat output name -> numpy array, in the artifact's order.

    Raises:
        FxExportError: the program failed (its one-line error is in the message).
    """
    out = Path(out_dir)
    return run_example(artifact, _write_inputs(inputs, out), out / "outputs", runtime="libtorch", binary=binary,
                       threads=threads, timeout=timeout).arrays()


# ----------------------------------------------------------------------------- one entry point for both programs


#: the C++ example programs, by the runtime they link: ``fxexport cpp-example --runtime``
RUNTIMES: tuple[str, ...] = ("libtorch", "openvino")


@dataclass
class ProgramRun:
    """One run of a C++ example program: what it printed and the ``outputs.json`` it wrote.

    ``listing`` is the program's ``outputs.json`` (``kind``, ``outputs``: name, shape, dtype,
    file, sum, abs_sum; the OpenVINO program adds its runtime settings); the arrays are the
    ``.npy`` files beside it in ``out_dir``.

    Example:
        >>> run = ProgramRun("libtorch", Path("fxexport_infer"), Path("m.pt"), Path("out"),
        ...                  "artifact: m.pt (torchscript), 1 outputs\\nfeat\\tshape=[1,8]\\tdtype=float32\\n",
        ...                  {"kind": "torchscript", "outputs": [{"name": "feat", "shape": [1, 8]}]})
        >>> run.output_names, run.output_lines()
        (['feat'], ['feat\\tshape=[1,8]\\tdtype=float32'])
        >>> run.to_dict()["binary"], run.to_dict()["kind"]
        ('fxexport_infer', 'torchscript')
    """

    runtime: str
    binary: Path
    artifact: Path
    out_dir: Path
    stdout: str
    listing: dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        """The flat output names, in the order the program wrote them."""
        return [str(o["name"]) for o in self.listing.get("outputs", [])]

    def output_lines(self) -> list[str]:
        """The program's ``NAME<TAB>shape=...<TAB>dtype=...`` lines (one per output)."""
        return [line for line in self.stdout.splitlines() if "\tshape=" in line]

    def arrays(self) -> OrderedDict[str, numpy.ndarray]:
        """``OrderedDict`` flat output name -> numpy array, read back from ``out_dir``."""
        return _read_outputs(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        """``{"binary": ..., **outputs.json}``, as ``fxexport cpp-example --run ... --json`` prints it."""
        return {"binary": str(self.binary), **self.listing}


def build_example(runtime: str = "libtorch", cache_dir: str | os.PathLike | None = None, *, force: bool = False,
                  verbose: bool = False) -> Path:
    """:func:`build_cpp_example` (``runtime="libtorch"``) or :func:`build_openvino_example` (``"openvino"``).

    Raises:
        InvalidInputError: an unknown ``runtime`` (the message lists :data:`RUNTIMES`).

    Example:
        >>> build_example("tensorrt")
        Traceback (most recent call last):
        ...
        fxexport.errors.InvalidInputError: unknown C++ example runtime 'tensorrt'; known: libtorch, openvino
    """
    build = {"libtorch": build_cpp_example, "openvino": build_openvino_example}.get(runtime)
    if build is None:
        raise InvalidInputError(f"unknown C++ example runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return build(cache_dir, force=force, verbose=verbose)


def run_example(artifact: str | os.PathLike, inputs: Any, out_dir: str | os.PathLike, *, runtime: str = "libtorch",
                binary: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                threads: int | None = None, device: str | None = None, precision: str | None = None,
                bench: int = 0, warmup: int | None = None, seed: int = 0, timeout: float = 600) -> ProgramRun:
    """Run ``artifact`` in the C++ example program of ``runtime``; the program writes its outputs to ``out_dir``.

    Args:
        artifact: for ``"libtorch"`` a ``.pt`` / ``.pt2`` file, for ``"openvino"`` an ``.onnx``
            or an IR ``.xml``.
        inputs: ``None`` (one seeded random input set of the shapes the artifact's
            manifest declares: the first set ``verify`` would make), input files
            (a path or a list of paths: ``.npy``, passed to the program as they are), or
            tensors / numpy arrays (written as ``.npy`` to a temporary folder).
        out_dir: where the program writes ``outputs.json`` and ``<i>_<name>.npy`` per output.
        runtime: one of :data:`RUNTIMES`.
        binary: the program (default: built or found in the cache by :func:`build_example`).
        cache_dir: the build cache, when ``binary`` is not given.
        threads: intra-op threads (libtorch) / ``INFERENCE_NUM_THREADS`` (OpenVINO).
        device / precision / bench / warmup: OpenVINO program options (see
            :func:`run_openvino_example`); refused for libtorch.
        seed: seed of the random inputs when ``inputs`` is ``None``.

    Returns:
        A :class:`ProgramRun` (stdout, ``outputs.json``; ``.arrays()`` reads the outputs).

    Raises:
        InvalidInputError: an unknown runtime, or OpenVINO options for libtorch.
        VerificationError: ``inputs=None`` and the artifact has no readable manifest.
        FxExportError: the build or the program failed (the program's one-line error).

    Example (``run_example("r18.xml", None, "out", runtime="openvino").output_names`` gives
    ``['layer2', 'layer4']``; options are checked before anything is built):
        >>> run_example("r18.pt", None, "out", precision="f32")
        Traceback (most recent call last):
        ...
        fxexport.errors.InvalidInputError: precision: an OpenVINO program option; pass runtime='openvino' or drop it
    """
    import tempfile

    if runtime not in RUNTIMES:
        raise InvalidInputError(f"unknown C++ example runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    options: list[str] = []
    if runtime == "openvino":
        options += ["--device", device or "CPU", "--precision", precision or "auto"]
        if bench:
            options += ["--bench", str(bench)] + (["--warmup", str(warmup)] if warmup is not None else [])
    else:
        given = [k for k, v in (("device", device), ("precision", precision), ("bench", bench or None),
                                ("warmup", warmup)) if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)}: an OpenVINO program option; "
                                    "pass runtime='openvino' or drop it")
    if threads:
        options += ["--threads", str(threads)]
    exe = Path(binary) if binary is not None else build_example(runtime, cache_dir)
    with tempfile.TemporaryDirectory(prefix="fxexport-cpp-") as scratch:
        if inputs is None:
            inputs = _random_inputs(artifact, seed)
        if isinstance(inputs, (str, os.PathLike)):
            paths = [str(inputs)]
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, (str, os.PathLike)) for i in inputs):
            paths = [str(i) for i in inputs]
        else:
            paths = _write_inputs(inputs, Path(scratch))
        cmd = [str(exe), str(artifact), *paths, "--out", str(out_dir), *options]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    program = OPENVINO_PROGRAM if runtime == "openvino" else PROGRAM
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        raise FxExportError(lines[-1] if lines else f"{program} exited {proc.returncode} on '{artifact}'")
    listing = json.loads((Path(out_dir) / "outputs.json").read_text())
    return ProgramRun(runtime, exe, Path(artifact), Path(out_dir), proc.stdout, listing)


def _random_inputs(artifact: str | os.PathLike, seed: int) -> list:
    """One seeded random input set for ``artifact``, from its manifest (read from the file's bytes)."""
    from fxexport.formats import read_manifest
    from fxexport.verification import make_inputs

    return list(make_inputs(read_manifest(str(artifact)), n_inputs=1, seed=seed)[0])


def _write_inputs(inputs, out: Path) -> list[str]:
    """Save a tensor / array, or a list of them, as ``out/input_<i>.npy``; return the paths."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    paths = []
    for i, x in enumerate(items):
        array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        p = out / f"input_{i}.npy"
        np.save(p, np.ascontiguousarray(array))
        paths.append(str(p))
    return paths


def _read_outputs(folder: Path) -> OrderedDict[str, numpy.ndarray]:
    from collections import OrderedDict

    import numpy as np

    listing = json.loads((folder / "outputs.json").read_text())
    return OrderedDict((o["name"], np.load(folder / o["file"])) for o in listing["outputs"])


# ----------------------------------------------------------------------------- OpenVINO


def openvino_sdk() -> tuple[Path, Path, str]:
    """``(include, libs, library)`` of the C++ SDK inside the installed ``openvino`` wheel.

    ``library`` is the versioned file name to link (``libopenvino.so.2641``): the wheel
    has no unversioned ``libopenvino.so``, hence ``-l:NAME``. The package is located
    without importing it.

    Raises:
        FxExportError: openvino is not installed, or the package holds no C++ SDK.
    """
    spec = importlib.util.find_spec("openvino")
    if spec is None or not spec.submodule_search_locations:
        raise FxExportError("the openvino package is not installed: pip install 'fxexport[openvino]' "
                            "(its wheel carries the C++ SDK the OpenVINO example builds against)")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    include, libs = root / "include", root / "libs"
    names = sorted((p.name for p in libs.glob("libopenvino.so.*")), key=lambda n: (len(n), n))
    if not (include / "openvino" / "openvino.hpp").exists() or not names:
        raise FxExportError(f"the openvino package at '{root}' has no C++ SDK (include/openvino/openvino.hpp and "
                            "libs/libopenvino.so.*): install the PyPI wheel, pip install 'openvino>=2026.4'")
    return include, libs, names[0]


def openvino_compile_command(source: str | os.PathLike, output: str | os.PathLike, *, cxx: str | None = None,
                             opt: str = "-O2") -> list[str]:
    """The compiler command line that builds ``source`` into ``output`` against the installed openvino wheel."""
    include, libs, library = openvino_sdk()
    return [cxx or _compiler(), opt, "-std=c++17", "-I", str(include), str(source), "-o", str(output),
            "-L", str(libs), f"-l:{library}", f"-Wl,-rpath,{libs}"]


def _openvino_build_id() -> str:
    from importlib.metadata import PackageNotFoundError, version

    _, libs, library = openvino_sdk()
    try:
        dist = version("openvino")
    except PackageNotFoundError:
        dist = "?"
    return f"openvino {dist}|{library}|{(libs / library).stat().st_size}"


def cached_openvino_binary_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`build_openvino_example` keeps the program for the current sources, compiler and openvino."""
    sources = [source_dir() / s for s in OPENVINO_SOURCES]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(openvino_compile_command(sources[0], "OUT"), sources, _openvino_build_id())
    return cache / f"{OPENVINO_PROGRAM}-{key}"


def build_openvino_example(cache_dir: str | os.PathLike | None = None, *, force: bool = False,
                           verbose: bool = False) -> Path:
    """Path to the built ``fxexport_openvino`` program, compiling it only when needed.

    Cached like :func:`build_cpp_example`: ``<cache_dir>/fxexport_openvino-<key>``,
    the key hashing the sources (``fxexport_openvino.cpp`` and ``fxexport_common.hpp``),
    the compile command, the compiler's version and the openvino wheel (its
    version and library); written atomically. Building takes about 5 s (the OpenVINO headers are small).

    Args:
        cache_dir: where to keep it (default :func:`default_cache_dir`).
        force: rebuild even when a cached binary exists.
        verbose: print the compile command and the time it took to stderr.

    Raises:
        FxExportError: openvino is not installed, no compiler, or the compile
            failed (the message holds the compiler's first errors).

    Example (where it would be kept, without building it):
        >>> cached_openvino_binary_path("/tmp/fxexport-cache").name.startswith("fxexport_openvino-")
        True
    """
    sources = [source_dir() / s for s in OPENVINO_SOURCES]
    return _build(OPENVINO_PROGRAM, cached_openvino_binary_path(cache_dir), sources, openvino_compile_command,
                  force=force, verbose=verbose)


def run_openvino_example(artifact: str | os.PathLike, inputs, out_dir: str | os.PathLike, *,
                         binary: str | os.PathLike | None = None, threads: int | None = None, device: str = "CPU",
                         precision: str = "auto", bench: int = 0, warmup: int | None = None,
                         timeout: float = 600) -> OrderedDict[str, numpy.ndarray]:
    """Run ``artifact`` in the OpenVINO C++ program and read its outputs back, by name.

    Args:
        artifact: an ``.onnx`` file or an OpenVINO IR ``.xml`` (its ``.bin`` beside it).
        inputs: a tensor / numpy array, or a list of them (written as .npy into ``out_dir``).
        out_dir: folder for the inputs and the program's outputs (``out_dir/outputs``,
            with ``outputs.json``).
        binary: the program (default: :func:`build_openvino_example`).
        threads: ``INFERENCE_NUM_THREADS`` for the program.
        device: the OpenVINO device (``CPU``, ``GPU``, ``NPU``).
        precision: ``auto`` (f32 inference precision for a float32 model), ``f32``
            or ``as-is`` (the device's default, bf16 on CPUs with AMX).
        bench: time this many runs after the warm-up; ``outputs.json`` then holds
            ``times_ms`` and ``median_ms``.
        warmup: untimed runs before the timed ones (the program's default: 10).

    Returns:
        ``OrderedDict`` flat output name -> numpy array, in the manifest's order.

    Raises:
        FxExportError: the program failed (its one-line error is in the message).

    Example:
        >>> import numpy as np
        >>> out = run_openvino_example("r18.onnx", np.zeros((1, 3, 224, 224), "float32"), "run")  # doctest: +SKIP
        >>> list(out)  # doctest: +SKIP
        ['layer2', 'layer4']
    """
    out = Path(out_dir)
    return run_example(artifact, _write_inputs(inputs, out), out / "outputs", runtime="openvino", binary=binary,
                       threads=threads, device=device, precision=precision, bench=bench, warmup=warmup,
                       timeout=timeout).arrays()


if __name__ == "__main__":  # python -m fxexport.cpp [--openvino] [CACHE_DIR]: build (if needed), print the path
    _args = sys.argv[1:]
    _build_fn = build_openvino_example if "--openvino" in _args else build_cpp_example
    _args = [a for a in _args if a != "--openvino"]
    print(_build_fn(_args[0] if _args else None, verbose=True))

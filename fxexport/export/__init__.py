"""Exporters: one module per artifact format, each returning the :class:`~fxexport.manifest.Manifest`
it stores in the artifact.

* :func:`export_onnx` - ONNX with graph outputs named by the flat names (``fxexport.export.onnx``);
* :func:`export_torchscript` - a TorchScript archive returning the flat tuple (``fxexport.export.torchscript``);
* :func:`export_aoti` - an AOTInductor package (``.pt2``) for C++, manifest in its metadata (``fxexport.export.aoti``).

Both flatten the extractor's outputs with :mod:`fxexport.flatten`, check the
artifact against the eager extractor before writing it atomically, and are
byte-for-byte reproducible.
"""

from fxexport.export.onnx import export_onnx
from fxexport.export.torchscript import export_torchscript
from fxexport.export.aoti import export_aoti

__all__ = ["export_onnx", "export_torchscript", "export_aoti"]

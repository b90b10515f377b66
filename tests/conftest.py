"""Suite-wide guards.

Every test writes where it was told (``tmp_path``, an artifact's own folder), never into the
directory it runs from: a library that drops files into the user's working directory (onnxruntime's
symbolic shape inference saves ``sym_shape_infer_temp.onnx`` + a ``<uuid>.data`` there when it gives
up) is a bug users see as litter in their repository.
"""

from __future__ import annotations

import os

import pytest


#: what the suite itself keeps in the repository (all git-ignored): pytest's and hypothesis' caches, the
#: compiled C++ programs and Inductor cache (``.cache/``, tests/_cpp_artifacts.py) and the browser tests'
#: screenshots (``build/browser``, tests/browser.py)
SUITE_CACHES = frozenset({".pytest_cache", ".hypothesis", "__pycache__", ".cache", "build"})


@pytest.fixture(autouse=True)
def leaves_the_working_directory_alone():
    """Fail a test after which the working directory holds an entry it did not hold before."""
    before = set(os.listdir("."))
    yield
    new = sorted(set(os.listdir(".")) - before - SUITE_CACHES)
    if new:
        pytest.fail(f"the test left {new} in the working directory {os.getcwd()!r}", pytrace=False)

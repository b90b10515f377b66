"""scripts/cpp/fxexport_common.hpp, the header fxexport_infer.cpp and fxexport_openvino.cpp share.

Editing it must rebuild both programs (it is part of both cache keys), and its runtime-free pieces
(.npy header and payload, --shape, the JSON reader, an output's report) are checked here through a
small driver compiled against the header alone (no torch, no OpenVINO: about a second of g++).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import fxexport.cpp as cpp

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
    reason="no C++ compiler (apt-get install g++)",
)

DRIVER = r"""
#include "fxexport_common.hpp"
#include <iostream>
#include <sstream>
#include <vector>

int main(int argc, char** argv) {
  std::string cmd = argv[1];
  try {
    if (cmd == "npy") {  // npy IN OUT: read a .npy, write it back with write_npy_file
      fxexport::NpyReader npy(argv[2]);
      size_t item = std::string(fxexport::kNpyDescrs[npy.dtype]).back() - '0';
      size_t n = 1;
      for (auto d : npy.shape) n *= static_cast<size_t>(d);
      std::vector<char> data(n * item);
      npy.read(data.data(), data.size());
      fxexport::write_npy_file(argv[3], fxexport::kNpyDescrs[npy.dtype], npy.shape, data.data(), data.size());
      std::cout << fxexport::kNpyDescrs[npy.dtype] << " " << fxexport::shape_str(npy.shape) << "\n";
    } else if (cmd == "shape") {  // shape TEXT NONNEG
      std::cout << fxexport::shape_str(fxexport::parse_shape(argv[2], std::string(argv[3]) == "1")) << "\n";
    } else if (cmd == "json") {  // json TEXT: the value of "name" and the number of "outputs"
      fxexport::Json j = fxexport::JsonParser(argv[2]).parse();
      std::cout << fxexport::json_quote(j.get("name")->string) << " " << j.get("outputs")->array.size() << "\n";
    } else if (cmd == "report") {  // report NAME: the stdout line, then the listing entry and file
      std::ostringstream listing;
      std::string file = fxexport::report_output(std::cout, listing, 1, argv[2], "[2, 3]", "float32", 1.5, 2.25);
      std::cout << "[{}" << listing.str() << "]\n" << file << "\n";
    }
  } catch (const fxexport::UsageError& e) {
    std::cerr << "usage: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    folder = tmp_path_factory.mktemp("common")
    (folder / "driver.cpp").write_text(DRIVER)
    exe = folder / "driver"
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    proc = subprocess.run([cxx, "-std=c++17", "-O1", "-I", str(cpp.source_dir()), str(folder / "driver.cpp"), "-o",
                           str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_both_cache_keys_include_the_common_header(tmp_path, monkeypatch):
    src = tmp_path / "cpp"  # a copy (the key also holds the source's path in the compile command)
    shutil.copytree(cpp.source_dir(), src)
    monkeypatch.setattr(cpp, "source_dir", lambda: src)
    before = cpp.cached_binary_path(tmp_path), cpp.cached_openvino_binary_path(tmp_path)
    assert (cpp.cached_binary_path(tmp_path), cpp.cached_openvino_binary_path(tmp_path)) == before
    with open(src / "fxexport_common.hpp", "a") as fh:
        fh.write("\n// changed\n")
    after = cpp.cached_binary_path(tmp_path), cpp.cached_openvino_binary_path(tmp_path)
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize("array", [
    np.arange(24, dtype="float32").reshape(2, 3, 4) - 7.5,
    np.arange(5, dtype="int64") * -3,
    np.array([True, False, True]).reshape(3, 1),
    np.float16(2.5) * np.ones((1, 70), dtype="float16"),
])
def test_npy_round_trip(driver, tmp_path, array):
    np.save(tmp_path / "in.npy", array)
    proc = _run(driver, "npy", tmp_path / "in.npy", tmp_path / "out.npy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1)[1].strip() == "[" + ", ".join(map(str, array.shape)) + "]"
    back = np.load(tmp_path / "out.npy")
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "in.npy").read_bytes()


def test_npy_errors_are_usage_errors(driver, tmp_path):
    np.save(tmp_path / "c64.npy", np.zeros(3, dtype="complex64"))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((2, 3), dtype="float32")))
    np.save(tmp_path / "full.npy", np.zeros(8, dtype="float32"))
    (tmp_path / "short.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:-4])
    (tmp_path / "text.npy").write_text("not numpy")
    for name, message in [("c64", "has dtype '<c8'; expected one of"), ("fortran", "is Fortran-ordered"),
                          ("short", "is shorter than its header says"), ("text", "is not a .npy file"),
                          ("missing", "cannot open input")]:
        proc = _run(driver, "npy", tmp_path / f"{name}.npy", tmp_path / "out.npy")
        assert proc.returncode == 2 and message in proc.stderr, (name, proc.stderr)


def test_parse_shape(driver):
    assert _run(driver, "shape", "1,3,224,224", 1).stdout == "[1, 3, 224, 224]\n"
    assert _run(driver, "shape", "2,-1", 0).stdout == "[2, -1]\n"  # fxexport_infer leaves negatives to torch
    for text, nonneg in [("2,-1", 1), ("1,x", 0), ("", 0)]:
        proc = _run(driver, "shape", text, nonneg)
        assert proc.returncode == 2 and "--shape" in proc.stderr, (text, proc.stderr)


def test_json_reader_and_quote(driver):
    text = json.dumps({"name": "a\"b\\c\u00e9\U0001f600\n", "outputs": [{"name": "x"}, {"name": "y"}], "n": -1.5e3,
                       "flags": [True, False, None]})
    proc = _run(driver, "json", text)
    assert proc.returncode == 0, proc.stderr
    quoted, count = proc.stdout.rsplit(" ", 1)
    assert json.loads(quoted) == "a\"b\\c\u00e9\U0001f600\n" and count == "2\n"
    proc = _run(driver, "json", '{"name": "x", "outputs": [1,]}')
    assert proc.returncode == 3 and "manifest JSON: unexpected character at offset" in proc.stderr


def test_report_output(driver):
    proc = _run(driver, "report", "det/0:box")
    line, listing, file = proc.stdout.splitlines()
    assert line == "det/0:box\tshape=[2, 3]\tdtype=float32\tsum=1.5\tabs_sum=2.25"
    assert json.loads(listing)[1] == {"name": "det/0:box", "file": "1_det_0_box.npy", "shape": [2, 3],
                                      "dtype": "float32", "sum": 1.5, "abs_sum": 2.25}
    assert file == "1_det_0_box.npy"

// fxexport_openvino: run an fxexport ONNX file or OpenVINO IR in OpenVINO from C++ and write
// every output by name.
//
//   fxexport_openvino MODEL INPUT [INPUT ...] [--shape 1,3,224,224] [--out DIR] [--threads N]
//                     [--repeat N] [--bench N] [--warmup N] [--device CPU] [--precision f32|auto|as-is]
//                     [--info]
//
// MODEL is an ONNX file (.onnx, from fxexport.export_onnx) or an OpenVINO IR (.xml, with its .bin
// beside it). Each INPUT is a .npy file, or raw little-endian float32 whose shape is given by one
// --shape option per raw input, in order; inputs are given in the model's input order and cast
// to the model's input element types.
//
// The fxexport manifest (a JSON string) is read from the model's rt_info: "fxexport" / "manifest"
// (an IR written by fxexport's OpenVINO format), or a top-level string "fxexport", else
// "framework" / "fxexport" (where OpenVINO puts an ONNX file's metadata_props, so an ONNX file
// or an IR converted from one).
// An IR written by fxexport also records its .bin's SHA-256 (rt_info "fxexport" / "bin_sha256"):
// a .bin that does not match is reported (exit 2) and the model is not run.
// Outputs are read by the manifest's output names, in its order (request.get_tensor(name));
// without a manifest, in the model's order under their tensor names. For each output the
// program prints its name, shape, dtype and checksums (sum and sum of absolute values, in
// double), and with --out DIR writes DIR/<i>_<name>.npy plus DIR/outputs.json, which lists the
// outputs in order: [{"name", "file", "shape", "dtype", "sum", "abs_sum"}].
//
// Precision: for a float32 model (every floating-point input and output f32, and no float16 or
// bfloat16 in the manifest's format name or dtypes, as fxexport's Python sessions decide) the
// program sets INFERENCE_PRECISION_HINT to f32, because on CPUs with bf16 or AMX the CPU plugin
// otherwise computes in bf16. --precision f32 forces it, --precision as-is leaves the device's
// default. The hint set and the precision the compiled model reports are printed ("inference
// precision f32 (hint f32)") and written to outputs.json ("precision_hint", "inference_precision").
//
// --threads N sets INFERENCE_NUM_THREADS; the program always asks for PERFORMANCE_HINT LATENCY and
// NUM_STREAMS 1 (as fxexport's Python sessions do).
// --repeat N runs the model N more times after the first run and prints the median latency in
// milliseconds (as fxexport_infer does); --bench N times N runs after --warmup W untimed runs
// (default 10) and prints median, mean and min; outputs.json then holds "times_ms".
// --info prints the manifest and the output names without compiling or running the model.
//
// Exit codes: 0 ok, 2 bad usage or unreadable input, 3 the model failed to load, compile or run,
// or its outputs do not match the manifest's output names.

#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fxexport_common.hpp"

namespace fs = std::filesystem;

namespace {

const char* const kProgram = "fxexport_openvino";

using namespace fxexport;  // fxexport_common.hpp: Json, UsageError, shape_str, ...

// OpenVINO exceptions carry source locations ("Exception from src/x.cpp:84:", "Check 'cond' failed
// at src/y.cpp:563:") and span several lines: keep the message, on one line.
std::string one_line(const std::string& text) {
  std::stringstream in(text);
  std::string line, out;
  while (std::getline(in, line)) {
    for (const char* marker : {"Exception from ", "Check '"}) {
      for (auto p = line.find(marker); p != std::string::npos; p = line.find(marker, p)) {
        auto from = std::string(marker) == "Check '" ? line.find("' failed at ", p) : p;
        auto colon = from == std::string::npos ? from : line.find(':', line.find(':', from) + 1);
        if (colon == std::string::npos) {  // a location alone on its line
          line.erase(p);
          break;
        }
        line.erase(p, colon + 1 - p);
      }
    }
    auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    out += (out.empty() ? "" : " ") + line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
  }
  return out.empty() ? text : out;
}

// ---------------------------------------------------------------------------
// .npy read / write: fxexport_common.hpp's, with OpenVINO tensors.

struct DtypeInfo {
  ov::element::Type_t type;
  const char* name;  // the manifest's dtype names, as torch writes them in Python
};
// The element types of fxexport::kNpyDescrs, in its order.
const DtypeInfo kNpyTypes[] = {
    {ov::element::f32, "float32"}, {ov::element::f64, "float64"}, {ov::element::f16, "float16"},
    {ov::element::i64, "int64"},   {ov::element::i32, "int32"},   {ov::element::i16, "int16"},
    {ov::element::i8, "int8"},     {ov::element::u8, "uint8"},    {ov::element::boolean, "bool"},
};
static_assert(sizeof(kNpyTypes) / sizeof(kNpyTypes[0]) == fxexport::kNpyDtypes);

// The index of type in kNpyTypes (and fxexport::kNpyDescrs), or fxexport::kNpyDtypes.
size_t npy_dtype(const ov::element::Type& type) {
  for (size_t i = 0; i < fxexport::kNpyDtypes; ++i)
    if (type == kNpyTypes[i].type) return i;
  return fxexport::kNpyDtypes;
}

std::string dtype_name(const ov::element::Type& type) {
  if (type == ov::element::bf16) return "bfloat16";
  size_t d = npy_dtype(type);
  return d < fxexport::kNpyDtypes ? kNpyTypes[d].name : type.get_type_name();
}

ov::Tensor read_npy(const std::string& path) {
  fxexport::NpyReader npy(path);
  ov::Tensor t(kNpyTypes[npy.dtype].type, ov::Shape(npy.shape.begin(), npy.shape.end()));
  npy.read(t.data(), t.get_byte_size());
  return t;
}

ov::Tensor read_raw(const std::string& path, const ov::Shape& shape) {
  fxexport::RawReader raw(path);
  ov::Tensor t(ov::element::f32, shape);
  raw.read(t.data(), t.get_byte_size(), shape);
  return t;
}

// Element i of a tensor as double, and back: enough for casting inputs and for checksums.
double get_as_double(const ov::Tensor& t, size_t i) {
  const void* p = t.data();
  switch (t.get_element_type()) {
    case ov::element::f32: return static_cast<const float*>(p)[i];
    case ov::element::f64: return static_cast<const double*>(p)[i];
    case ov::element::f16: return static_cast<float>(static_cast<const ov::float16*>(p)[i]);
    case ov::element::bf16: return static_cast<float>(static_cast<const ov::bfloat16*>(p)[i]);
    case ov::element::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case ov::element::i32: return static_cast<const int32_t*>(p)[i];
    case ov::element::i16: return static_cast<const int16_t*>(p)[i];
    case ov::element::i8: return static_cast<const int8_t*>(p)[i];
    case ov::element::u8: return static_cast<const uint8_t*>(p)[i];
    case ov::element::boolean: return static_cast<const char*>(p)[i] ? 1.0 : 0.0;
    default: throw std::runtime_error("element type " + t.get_element_type().get_type_name() + " is not supported");
  }
}

void set_from_double(ov::Tensor& t, size_t i, double v) {
  void* p = t.data();
  switch (t.get_element_type()) {
    case ov::element::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case ov::element::f64: static_cast<double*>(p)[i] = v; break;
    case ov::element::f16: static_cast<ov::float16*>(p)[i] = ov::float16(static_cast<float>(v)); break;
    case ov::element::bf16: static_cast<ov::bfloat16*>(p)[i] = ov::bfloat16(static_cast<float>(v)); break;
    case ov::element::i64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case ov::element::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case ov::element::i16: static_cast<int16_t*>(p)[i] = static_cast<int16_t>(v); break;
    case ov::element::i8: static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); break;
    case ov::element::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case ov::element::boolean: static_cast<char*>(p)[i] = v != 0; break;
    default: throw std::runtime_error("element type " + t.get_element_type().get_type_name() + " is not supported");
  }
}

ov::Tensor cast(const ov::Tensor& t, const ov::element::Type& type) {
  if (t.get_element_type() == type) return t;
  ov::Tensor out(type, t.get_shape());
  for (size_t i = 0, n = t.get_size(); i < n; ++i) set_from_double(out, i, get_as_double(t, i));
  return out;
}

void write_npy(const ov::Tensor& tensor, const fs::path& path) {
  ov::Tensor t = tensor.get_element_type() == ov::element::bf16 ? cast(tensor, ov::element::f32) : tensor;
  size_t d = npy_dtype(t.get_element_type());
  if (d == fxexport::kNpyDtypes)
    throw std::runtime_error("cannot write element type " + t.get_element_type().get_type_name() + " to .npy");
  fxexport::write_npy_file(path, fxexport::kNpyDescrs[d], t.get_shape(), t.data(), t.get_byte_size());
}

int parse_count(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    int v = std::stoi(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(option + " '" + text + "' is not a non-negative integer");
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4) of a file: an IR written by fxexport records its .bin's hash, and a pair
// whose .bin does not match is reported, never run.

class Sha256 {
 public:
  void update(const unsigned char* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      block_[used_++] = data[i];
      if (used_ == 64) {
        compress();
        used_ = 0;
      }
    }
    bytes_ += n;
  }
  std::string hex() {
    uint64_t bits = bytes_ * 8;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (used_ != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(len, 8);
    std::ostringstream o;
    for (uint32_t v : h_) o << std::hex << std::setw(8) << std::setfill('0') << v;
    return o.str();
  }

 private:
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char block_[64] = {};
  size_t used_ = 0;
  uint64_t bytes_ = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(block_[4 * i]) << 24) | (uint32_t(block_[4 * i + 1]) << 16) |
             (uint32_t(block_[4 * i + 2]) << 8) | uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
};

std::string sha256_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError("cannot open '" + path.string() + "'");
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  while (f) {
    f.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    sha.update(reinterpret_cast<const unsigned char*>(buffer.data()), static_cast<size_t>(f.gcount()));
  }
  return sha.hex();
}

// ---------------------------------------------------------------------------
// The manifest in rt_info.

struct ManifestInfo {
  std::string json;        // empty when the model carries none
  std::string source;      // where it was found, e.g. rt_info["fxexport"]["manifest"]
  std::string format;      // its "format" field ("onnx", "openvino"), when it has one
  std::string bin_sha256;  // the IR's recorded .bin hash (rt_info["fxexport"]["bin_sha256"]), when any
  bool low_precision = false;  // the manifest says float16 / bfloat16
  std::vector<std::string> output_names;
};

// rt_info[section][key] as a string, when the section is a map that has the key.
bool rt_string(const std::shared_ptr<ov::Model>& model, const std::string& section, const std::string& key,
               std::string& out) {
  try {
    if (!model->has_rt_info(section, key)) return false;
    out = model->get_rt_info<std::string>(section, key);
    return true;
  } catch (const std::exception&) {  // the section is a plain value, not a map
    return false;
  }
}

ManifestInfo read_manifest(const std::shared_ptr<ov::Model>& model) {
  ManifestInfo info;
  // An IR written by fxexport's OpenVINO format keeps its own manifest in the section "fxexport"
  // (key "manifest", beside the .bin's hash "bin_sha256"); a top-level string "fxexport" is read
  // too. The ONNX manifest (also inherited by an IR converted from an fxexport ONNX file) is
  // under "framework".
  rt_string(model, "fxexport", "bin_sha256", info.bin_sha256);
  if (rt_string(model, "fxexport", "manifest", info.json)) {
    info.source = "rt_info[\"fxexport\"][\"manifest\"]";
  } else if (model->has_rt_info("fxexport") && model->get_rt_info<ov::Any>("fxexport").is<std::string>()) {
    info.json = model->get_rt_info<std::string>("fxexport");
    info.source = "rt_info[\"fxexport\"]";
  } else if (model->has_rt_info("framework", "fxexport")) {
    info.json = model->get_rt_info<std::string>("framework", "fxexport");
    info.source = "rt_info[\"framework\"][\"fxexport\"]";
  } else {
    return info;
  }
  Json manifest = JsonParser(info.json).parse();
  if (manifest.type != Json::Type::Object) throw std::runtime_error("the manifest in " + info.source + " is not a JSON object");
  if (const Json* format = manifest.get("format"); format && format->type == Json::Type::String) info.format = format->string;
  const Json* outputs = manifest.get("outputs");
  if (!outputs || outputs->type != Json::Type::Array)
    throw std::runtime_error("the manifest in " + info.source + " has no 'outputs' list");
  for (const auto& o : outputs->array) {
    const Json* name = o.get("name");
    if (!name || name->type != Json::Type::String)
      throw std::runtime_error("the manifest in " + info.source + " has an output without a name");
    info.output_names.push_back(name->string);
  }
  // As fxexport.formats.openvino.compile_config: a float32 artifact unless the manifest says it
  // computes in float16 / bfloat16 (its format name, or an input / output dtype).
  std::string fmt = info.format;
  std::transform(fmt.begin(), fmt.end(), fmt.begin(), [](unsigned char c) { return std::tolower(c); });
  info.low_precision = fmt.find("fp16") != std::string::npos || fmt.find("bf16") != std::string::npos;
  for (const char* key : {"inputs", "outputs"}) {
    const Json* tensors = manifest.get(key);
    if (!tensors || tensors->type != Json::Type::Array) continue;
    for (const auto& t : tensors->array) {
      const Json* dtype = t.type == Json::Type::Object ? t.get("dtype") : nullptr;
      if (dtype && dtype->type == Json::Type::String && (dtype->string == "float16" || dtype->string == "bfloat16"))
        info.low_precision = true;
    }
  }
  return info;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The compiled model's outputs in the manifest's order, found by tensor name.
std::vector<ov::Output<const ov::Node>> outputs_by_name(const ov::CompiledModel& compiled,
                                                        const std::vector<std::string>& names) {
  const auto all = compiled.outputs();
  std::vector<std::string> available;
  for (const auto& o : all) available.push_back(o.get_any_name());
  if (all.size() != names.size())
    throw std::runtime_error("the model has " + std::to_string(all.size()) + " outputs (" + join(available) +
                             ") but its manifest names " + std::to_string(names.size()));
  std::vector<ov::Output<const ov::Node>> out;
  for (const auto& name : names) {
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& o) { return o.get_names().count(name) > 0; });
    if (it == all.end())
      throw std::runtime_error("the manifest's output '" + name + "' is not an output of the model (outputs: " +
                               join(available) + ")");
    out.push_back(*it);
  }
  return out;
}

bool is_float(const ov::element::Type& t) { return t.is_real(); }

// A float32 model: every floating-point input and output is f32 (and there is at least one).
bool is_float32_model(const std::shared_ptr<ov::Model>& model) {
  bool any = false;
  for (const auto& ports : {model->inputs(), model->outputs()})
    for (const auto& p : ports)
      if (is_float(p.get_element_type())) {
        if (p.get_element_type() != ov::element::f32) return false;
        any = true;
      }
  return any;
}

bool supports(ov::Core& core, const std::string& device, const std::string& property) {
  auto names = core.get_property(device, ov::supported_properties);
  return std::find(names.begin(), names.end(), property) != names.end();
}

int usage(std::ostream& os) {
  os << "usage: " << kProgram
     << " MODEL(.onnx|.xml) INPUT(.npy|raw float32) [INPUT ...] [--shape 1,3,224,224] [--out DIR] [--threads N]"
        " [--repeat N] [--bench N] [--warmup N] [--device CPU] [--precision f32|auto|as-is] [--info]\n";
  return 2;
}

[[noreturn]] void fail(int code, const std::string& message) {
  std::cerr << kProgram << ": error: " << one_line(message) << "\n";
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, out_dir, device = "CPU", precision = "auto";
  std::vector<std::string> input_paths;
  std::vector<ov::Shape> shapes;
  int threads = 0, repeat = 0, bench = 0, warmup = -1;
  bool info = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&] { return fxexport::option_value(argc, argv, i); };
      if (a == "--shape") {
        auto dims = fxexport::parse_shape(value(), true);
        shapes.emplace_back(dims.begin(), dims.end());
      }
      else if (a == "--out") out_dir = value();
      else if (a == "--threads") threads = parse_count(a, value());
      else if (a == "--repeat") repeat = parse_count(a, value());
      else if (a == "--bench") bench = parse_count(a, value());
      else if (a == "--warmup") warmup = parse_count(a, value());
      else if (a == "--device") device = value();
      else if (a == "--precision") precision = value();
      else if (a == "--info") info = true;
      else if (a == "-h" || a == "--help") return usage(std::cout), 0;
      else if (a.rfind("--", 0) == 0) throw UsageError("unknown option " + a);
      else if (model_path.empty()) model_path = a;
      else input_paths.push_back(a);
    }
    if (model_path.empty() || (input_paths.empty() && !info)) return usage(std::cerr);
    if (precision != "auto" && precision != "f32" && precision != "as-is")
      throw UsageError("--precision '" + precision + "' is not one of f32, auto, as-is");
    if (repeat && bench) throw UsageError("give --repeat N or --bench N, not both");
    if (warmup >= 0 && !bench) throw UsageError("--warmup goes with --bench N");
    if (!fs::exists(model_path)) throw UsageError("model '" + model_path + "' does not exist");
    if (!ends_with(model_path, ".onnx") && !ends_with(model_path, ".xml"))
      throw UsageError("model '" + model_path + "' is neither .onnx nor .xml (an OpenVINO IR)");
    if (ends_with(model_path, ".xml") && !fs::exists(fs::path(model_path).replace_extension(".bin")))
      throw UsageError("the IR's weights '" + fs::path(model_path).replace_extension(".bin").string() +
                       "' do not exist; an OpenVINO IR is the .xml and the .bin of the same name beside it");
  } catch (const std::exception& e) {
    fail(2, e.what());
  }
  const std::string kind = ends_with(model_path, ".xml") ? "openvino" : "onnx";

  ov::Core core;
  // The file goes to its own frontend ("onnx" or "ir") only: core.read_model(path) would offer a
  // file that frontend rejects to every other frontend too (and TensorFlow's logs its parse errors).
  ov::frontend::FrontEndManager frontends;
  ov::frontend::FrontEnd::Ptr frontend;  // kept alive as long as the model
  std::shared_ptr<ov::Model> model;
  ManifestInfo manifest;
  try {
    frontend = frontends.load_by_framework(kind == "onnx" ? "onnx" : "ir");
    model = frontend->convert(frontend->load(model_path));
    manifest = read_manifest(model);
  } catch (const std::exception& e) {
    fail(3, "cannot load '" + model_path + (kind == "onnx" ? "' as ONNX: " : "' as an OpenVINO IR: ") + e.what());
  }
  if (kind == "openvino" && !manifest.bin_sha256.empty()) {
    fs::path bin = fs::path(model_path).replace_extension(".bin");
    std::string actual = sha256_file(bin);
    if (actual != manifest.bin_sha256)
      fail(2, "OpenVINO IR '" + model_path + "': weights '" + bin.filename().string() + "' do not match the .xml (sha256 " +
                  actual.substr(0, 12) + "..., the .xml records " + manifest.bin_sha256.substr(0, 12) +
                  "...); the pair was mixed up or changed: re-export both files");
  }
  std::cout << "artifact: " << model_path << " (" << kind << "), " << model->outputs().size() << " outputs, manifest "
            << (manifest.json.empty() ? std::string("(none)")
                                      : "from " + manifest.source + (manifest.format.empty() ? "" : " (format " + manifest.format + ")"))
            << "\n";
  if (info) {
    std::cout << "manifest: " << (manifest.json.empty() ? "(none)" : manifest.json) << "\n";
    if (!manifest.json.empty()) {
      for (const auto& n : manifest.output_names) std::cout << "output: " << n << "\n";
    } else {
      for (const auto& o : model->outputs()) std::cout << "output: " << o.get_any_name() << "\n";
    }
    return 0;
  }

  std::vector<ov::Tensor> inputs;
  try {
    inputs = fxexport::read_inputs<ov::Tensor>(input_paths, shapes, read_npy, read_raw);
    const auto params = model->inputs();
    if (inputs.size() != params.size()) {
      std::vector<std::string> names;
      for (const auto& p : params) names.push_back(p.get_any_name());
      throw UsageError("the model takes " + std::to_string(params.size()) + " input(s) (" + join(names) + "), got " +
                       std::to_string(inputs.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      inputs[i] = cast(inputs[i], params[i].get_element_type());
      if (!params[i].get_partial_shape().compatible(ov::PartialShape(inputs[i].get_shape())))
        throw UsageError("input " + std::to_string(i) + " ('" + input_paths[i] + "') has shape " +
                         shape_str(inputs[i].get_shape()) + "; the model's input '" + params[i].get_any_name() +
                         "' takes " + params[i].get_partial_shape().to_string());
    }
  } catch (const std::exception& e) {
    fail(2, e.what());
  }

  ov::CompiledModel compiled;
  std::string compiled_precision = "(device default)", hint;
  try {
    // The settings of fxexport's Python sessions (fxexport.formats.openvino.compile_config).
    ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
    if (threads > 0) config.emplace(ov::inference_num_threads(threads));
    bool f32 = precision == "f32" || (precision == "auto" && !manifest.low_precision && is_float32_model(model));
    if (f32 && supports(core, device, ov::hint::inference_precision.name())) {
      config.emplace(ov::hint::inference_precision(ov::element::f32));
      hint = "f32";
    }
    compiled = core.compile_model(model, device, config);
    if (supports(core, device, ov::hint::inference_precision.name()))
      compiled_precision = compiled.get_property(ov::hint::inference_precision).get_type_name();
  } catch (const std::exception& e) {
    fail(3, "cannot compile '" + model_path + "' for " + device + ": " + e.what());
  }
  std::vector<ov::Output<const ov::Node>> outputs;
  std::vector<std::string> names = manifest.output_names;
  try {
    if (names.empty())
      for (const auto& o : compiled.outputs()) names.push_back(o.get_any_name());
    outputs = outputs_by_name(compiled, names);
  } catch (const std::exception& e) {
    fail(3, "'" + model_path + "': " + e.what());
  }
  int used_threads = threads;
  try {
    used_threads = static_cast<int>(compiled.get_property(ov::inference_num_threads));
  } catch (const std::exception&) {
  }
  std::cout << "runtime: OpenVINO " << ov::get_openvino_version().buildNumber << ", device " << device
            << ", inference precision " << compiled_precision << " (hint " << (hint.empty() ? "none" : hint) << "), "
            << used_threads << " threads\n";

  ov::InferRequest request;
  std::vector<double> times_ms;
  const int timed = bench ? bench : repeat;
  const int untimed = bench ? (warmup >= 0 ? warmup : 10) : 0;
  try {
    request = compiled.create_infer_request();
    for (size_t i = 0; i < inputs.size(); ++i) request.set_input_tensor(i, inputs[i]);
    request.infer();  // the outputs written below; also the first warm-up run
    for (int r = 0; r < untimed; ++r) request.infer();
    for (int r = 0; r < timed; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      request.infer();
      auto t1 = std::chrono::steady_clock::now();
      times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  } catch (const std::exception& e) {
    fail(3, "running '" + model_path + "' failed: " + e.what());
  }

  if (!out_dir.empty()) fs::create_directories(out_dir);
  std::ostringstream listing;
  listing << std::setprecision(17) << "{\"artifact\": " << json_quote(model_path) << ", \"kind\": " << json_quote(kind)
          << ", \"manifest_source\": " << (manifest.json.empty() ? "null" : json_quote(manifest.source))
          << ", \"device\": " << json_quote(device) << ", \"precision_hint\": " << (hint.empty() ? "null" : json_quote(hint))
          << ", \"inference_precision\": " << json_quote(compiled_precision)
          << ", \"threads\": " << used_threads << ", \"outputs\": [";
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& name = names[i];
    ov::Tensor t = request.get_tensor(outputs[i]);
    double sum = 0, abs_sum = 0;
    try {
      for (size_t k = 0, n = t.get_size(); k < n; ++k) {
        double v = get_as_double(t, k);
        sum += v;
        abs_sum += std::abs(v);
      }
    } catch (const std::exception& e) {
      fail(3, "output '" + name + "': " + e.what());
    }
    std::string dtype = dtype_name(t.get_element_type());
    std::string file = report_output(std::cout, listing, i, name, shape_str(t.get_shape()), dtype, sum, abs_sum);
    if (!out_dir.empty()) {
      try {
        write_npy(t, fs::path(out_dir) / file);
      } catch (const std::exception& e) {
        fail(3, e.what());
      }
    }
  }
  listing << "]";
  if (!times_ms.empty()) {
    std::vector<double> sorted = times_ms;
    std::sort(sorted.begin(), sorted.end());
    double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                      : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
    double mean = std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(sorted.size());
    std::cout << std::fixed << std::setprecision(3) << "latency: median " << median << " ms";
    if (bench) std::cout << ", mean " << mean << " ms, min " << sorted.front() << " ms";
    std::cout << " over " << sorted.size() << " runs";
    if (bench) std::cout << " (" << untimed + 1 << " warm-up)";
    std::cout << "\n";
    listing << ", \"median_ms\": " << median << ", \"mean_ms\": " << mean << ", \"warmup\": " << untimed + 1
            << ", \"times_ms\": [";
    for (size_t i = 0; i < times_ms.size(); ++i) listing << (i ? ", " : "") << times_ms[i];
    listing << "]";
  }
  listing << "}\n";
  if (!out_dir.empty()) {
    std::ofstream f(fs::path(out_dir) / "outputs.json");
    f << listing.str();
    if (!f) fail(3, "cannot write '" + (fs::path(out_dir) / "outputs.json").string() + "'");
  }
  return 0;
}

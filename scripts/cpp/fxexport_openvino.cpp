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
#include <cstring>
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

namespace fs = std::filesystem;

namespace {

const char* const kProgram = "fxexport_openvino";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// A minimal JSON reader, enough for the manifest (objects, arrays, strings,
// numbers, true/false/null).
struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  const Json* get(const std::string& key) const {
    for (const auto& kv : object)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  Json parse() {
    Json value = parse_value();
    skip_ws();
    if (i_ != s_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("manifest JSON: " + what + " at offset " + std::to_string(i_));
  }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  Json parse_value() {
    char c = peek();
    Json v;
    if (c == '{') {
      v.type = Json::Type::Object;
      ++i_;
      if (peek() == '}') { ++i_; return v; }
      while (true) {
        if (peek() != '"') fail("expected a key");
        std::string key = parse_string();
        expect(':');
        v.object.emplace_back(std::move(key), parse_value());
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Json::Type::Array;
      ++i_;
      if (peek() == ']') { ++i_; return v; }
      while (true) {
        v.array.push_back(parse_value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Json::Type::String;
      v.string = parse_string();
      return v;
    }
    if (s_.compare(i_, 4, "true") == 0) { i_ += 4; v.type = Json::Type::Bool; v.boolean = true; return v; }
    if (s_.compare(i_, 5, "false") == 0) { i_ += 5; v.type = Json::Type::Bool; return v; }
    if (s_.compare(i_, 4, "null") == 0) { i_ += 4; return v; }
    size_t end = i_;
    while (end < s_.size() && std::strchr("+-0123456789.eE", s_[end])) ++end;
    if (end == i_) fail("unexpected character");
    v.type = Json::Type::Number;
    v.number = std::stod(s_.substr(i_, end - i_));
    i_ = end;
    return v;
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t parse_hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t cp = std::stoul(s_.substr(i_, 4), nullptr, 16);
    i_ += 4;
    return cp;
  }
  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') { out += c; continue; }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(i_, 2, "\\u") == 0) {
            i_ += 2;
            uint32_t lo = parse_hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
};

std::string json_quote(const std::string& s) {
  std::ostringstream o;
  o << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o << "\\\""; break;
      case '\\': o << "\\\\"; break;
      case '\n': o << "\\n"; break;
      case '\r': o << "\\r"; break;
      case '\t': o << "\\t"; break;
      default:
        if (c < 0x20) o << "\\u" << std::hex << std::setw(4) << std::setfill('0') << int(c) << std::dec;
        else o << c;
    }
  }
  o << '"';
  return o.str();
}

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
// .npy read / write (version 1.x / 2.x headers, C order, little endian).

struct DtypeInfo {
  const char* descr;
  ov::element::Type_t type;
  const char* name;  // the manifest's dtype names, as torch writes them in Python
};
const DtypeInfo kDtypes[] = {
    {"<f4", ov::element::f32, "float32"}, {"<f8", ov::element::f64, "float64"}, {"<f2", ov::element::f16, "float16"},
    {"<i8", ov::element::i64, "int64"},   {"<i4", ov::element::i32, "int32"},   {"<i2", ov::element::i16, "int16"},
    {"|i1", ov::element::i8, "int8"},     {"|u1", ov::element::u8, "uint8"},    {"|b1", ov::element::boolean, "bool"},
};

const DtypeInfo* dtype_info(const ov::element::Type& type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

std::string dtype_name(const ov::element::Type& type) {
  if (type == ov::element::bf16) return "bfloat16";
  const DtypeInfo* info = dtype_info(type);
  return info ? info->name : type.get_type_name();
}

std::string header_value(const std::string& header, const std::string& key) {
  auto pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw UsageError("npy header has no '" + key + "'");
  pos = header.find(':', pos) + 1;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  if (pos < header.size() && header[pos] == '\'') {
    auto end = header.find('\'', pos + 1);
    return header.substr(pos + 1, end - pos - 1);
  }
  if (pos < header.size() && header[pos] == '(') {
    auto end = header.find(')', pos);
    return header.substr(pos + 1, end - pos - 1);
  }
  auto end = header.find_first_of(",}", pos);
  return header.substr(pos, end - pos);
}

std::string shape_str(const ov::Shape& shape, const char* open = "[", const char* close = "]") {
  std::ostringstream o;
  o << open;
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << close;
  return o.str();
}

ov::Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError("cannot open input '" + path + "'");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw UsageError("'" + path + "' is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16 = 0;
    f.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    f.read(reinterpret_cast<char*>(&header_len), 4);
  }
  if (!f || header_len > (1u << 20)) throw UsageError("'" + path + "' has a broken .npy header");
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  std::string descr = header_value(header, "descr");
  if (header_value(header, "fortran_order") != "False")
    throw UsageError("'" + path + "' is Fortran-ordered; save it C-contiguous (np.ascontiguousarray)");
  ov::Shape shape;
  std::stringstream dims(header_value(header, "shape"));
  std::string item;
  while (std::getline(dims, item, ',')) {
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (!item.empty()) shape.push_back(static_cast<size_t>(std::stoll(item)));
  }
  const DtypeInfo* info = nullptr;
  for (const auto& d : kDtypes)
    if (descr == d.descr) info = &d;
  if (!info)
    throw UsageError("'" + path + "' has dtype '" + descr + "'; expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1");
  ov::Tensor t(info->type, shape);
  f.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(t.get_byte_size()));
  if (!f) throw UsageError("'" + path + "' is shorter than its header says");
  return t;
}

ov::Tensor read_raw(const std::string& path, const ov::Shape& shape) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw UsageError("cannot open input '" + path + "'");
  ov::Tensor t(ov::element::f32, shape);
  auto size = static_cast<size_t>(f.tellg());
  if (size != t.get_byte_size())
    throw UsageError("raw input '" + path + "' has " + std::to_string(size) + " bytes; shape " + shape_str(shape) +
                     " as float32 needs " + std::to_string(t.get_byte_size()));
  f.seekg(0);
  f.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(t.get_byte_size()));
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
  const DtypeInfo* info = dtype_info(t.get_element_type());
  if (!info) throw std::runtime_error("cannot write element type " + t.get_element_type().get_type_name() + " to .npy");
  const ov::Shape& dims = t.get_shape();
  std::string shape = dims.size() == 1 ? "(" + std::to_string(dims[0]) + ",)" : shape_str(dims, "(", ")");
  std::string header = std::string("{'descr': '") + info->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.data()), static_cast<std::streamsize>(t.get_byte_size()));
  if (!f) throw std::runtime_error("cannot write '" + path.string() + "'");
}

ov::Shape parse_shape(const std::string& text) {
  ov::Shape shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      long long v = std::stoll(item);
      if (v < 0) throw std::invalid_argument("negative");
      shape.push_back(static_cast<size_t>(v));
    } catch (const std::exception&) {
      throw UsageError("--shape '" + text + "' is not a comma-separated list of ints, e.g. 1,3,224,224");
    }
  }
  if (shape.empty()) throw UsageError("--shape is empty; give e.g. 1,3,224,224");
  return shape;
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

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out;
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
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw UsageError(a + " needs a value");
        return argv[++i];
      };
      if (a == "--shape") shapes.push_back(parse_shape(value()));
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
    size_t raw = 0;
    for (const auto& p : input_paths) {
      if (ends_with(p, ".npy")) {
        inputs.push_back(read_npy(p));
      } else {
        if (raw >= shapes.size()) throw UsageError("raw input '" + p + "' needs a --shape (one per raw input)");
        inputs.push_back(read_raw(p, shapes[raw++]));
      }
    }
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
    std::cout << std::setprecision(10) << name << "\tshape=" << shape_str(t.get_shape()) << "\tdtype=" << dtype
              << "\tsum=" << sum << "\tabs_sum=" << abs_sum << "\n";
    std::string file = std::to_string(i) + "_" + safe_file_name(name) + ".npy";
    if (!out_dir.empty()) {
      try {
        write_npy(t, fs::path(out_dir) / file);
      } catch (const std::exception& e) {
        fail(3, e.what());
      }
    }
    listing << (i ? ", " : "") << "{\"name\": " << json_quote(name) << ", \"file\": " << json_quote(file)
            << ", \"shape\": " << shape_str(t.get_shape()) << ", \"dtype\": " << json_quote(dtype)
            << std::setprecision(17) << ", \"sum\": " << sum << ", \"abs_sum\": " << abs_sum << "}";
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

// fxexport_common.hpp: the pieces fxexport_infer.cpp (libtorch) and fxexport_openvino.cpp (OpenVINO)
// share, header-only and free of either runtime: a minimal JSON reader for the manifest, JSON string
// quoting, the .npy header and payload (read and write), raw float32 inputs, --shape parsing, and the
// per-output line / outputs.json entry both programs print. Each program keeps what depends on its
// tensor type (allocating a tensor for a dtype, checksums, casts) and maps the .npy dtypes of
// kNpyDescrs, in that order, to its own element types.
//
// Included as "fxexport_common.hpp" from the programs beside it, so a plain compiler line finds it
// without an -I option; fxexport.cpp hashes it into both programs' cache keys.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fxexport {

// Bad usage or an unreadable input: the programs exit 2 on it.
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

inline std::string json_quote(const std::string& s) {
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

// ---------------------------------------------------------------------------
// Small string helpers.

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An output name as a file name: anything but [A-Za-z0-9._-] becomes '_', and no leading '.'.
inline std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out;
}

// "[1, 3, 224, 224]" (or with other brackets) for any sequence of integers with size() and [].
template <class Dims>
std::string shape_str(const Dims& shape, const char* open = "[", const char* close = "]") {
  std::ostringstream o;
  o << open;
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << close;
  return o.str();
}

// --shape 1,3,224,224; with non_negative, a negative size is refused too.
inline std::vector<int64_t> parse_shape(const std::string& text, bool non_negative) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      long long v = std::stoll(item);
      if (non_negative && v < 0) throw std::invalid_argument("negative");
      shape.push_back(v);
    } catch (const std::exception&) {
      throw UsageError("--shape '" + text + "' is not a comma-separated list of ints, e.g. 1,3,224,224");
    }
  }
  if (shape.empty()) throw UsageError("--shape is empty; give e.g. 1,3,224,224");
  return shape;
}

// ---------------------------------------------------------------------------
// .npy read / write (version 1.x / 2.x headers, C order, little endian).

// The .npy dtypes both programs read and write; each maps them, in this order, to its element types.
constexpr const char* kNpyDescrs[] = {"<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1"};
constexpr size_t kNpyDtypes = sizeof(kNpyDescrs) / sizeof(kNpyDescrs[0]);

inline std::string npy_header_value(const std::string& header, const std::string& key) {
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

// An open .npy file past its header: its dtype (an index into kNpyDescrs) and shape; read() then
// fills a tensor the caller made for them.
class NpyReader {
 public:
  explicit NpyReader(const std::string& path) : path_(path), f_(path, std::ios::binary) {
    if (!f_) throw UsageError("cannot open input '" + path + "'");
    char magic[8];
    f_.read(magic, 8);
    if (!f_ || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw UsageError("'" + path + "' is not a .npy file");
    uint32_t header_len = 0;
    if (magic[6] == 1) {
      uint16_t len16 = 0;
      f_.read(reinterpret_cast<char*>(&len16), 2);
      header_len = len16;
    } else {
      f_.read(reinterpret_cast<char*>(&header_len), 4);
    }
    if (!f_ || header_len > (1u << 20)) throw UsageError("'" + path + "' has a broken .npy header");
    std::string header(header_len, '\0');
    f_.read(header.data(), header_len);
    std::string descr = npy_header_value(header, "descr");
    if (npy_header_value(header, "fortran_order") != "False")
      throw UsageError("'" + path + "' is Fortran-ordered; save it C-contiguous (np.ascontiguousarray)");
    std::stringstream dims(npy_header_value(header, "shape"));
    std::string item;
    while (std::getline(dims, item, ',')) {
      item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
      if (!item.empty()) shape.push_back(std::stoll(item));
    }
    dtype = kNpyDtypes;
    for (size_t i = 0; i < kNpyDtypes; ++i)
      if (descr == kNpyDescrs[i]) dtype = i;
    if (dtype == kNpyDtypes)
      throw UsageError("'" + path + "' has dtype '" + descr + "'; expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1");
  }

  void read(void* data, size_t nbytes) {
    f_.read(static_cast<char*>(data), static_cast<std::streamsize>(nbytes));
    if (!f_) throw UsageError("'" + path_ + "' is shorter than its header says");
  }

  size_t dtype = 0;
  std::vector<int64_t> shape;

 private:
  std::string path_;
  std::ifstream f_;
};

// A raw little-endian float32 input: opened first (an unreadable path is reported before anything is
// allocated), then read() into a tensor of the --shape given for it, which must match its size.
class RawReader {
 public:
  explicit RawReader(const std::string& path) : path_(path), f_(path, std::ios::binary | std::ios::ate) {
    if (!f_) throw UsageError("cannot open input '" + path + "'");
  }

  template <class Dims>
  void read(void* data, size_t nbytes, const Dims& shape) {
    auto size = static_cast<size_t>(f_.tellg());
    if (size != nbytes)
      throw UsageError("raw input '" + path_ + "' has " + std::to_string(size) + " bytes; shape " + shape_str(shape) +
                       " as float32 needs " + std::to_string(nbytes));
    f_.seekg(0);
    f_.read(static_cast<char*>(data), static_cast<std::streamsize>(nbytes));
  }

 private:
  std::string path_;
  std::ifstream f_;
};

// The program's inputs in order: a .npy path through read_npy(path), any other path through
// read_raw(path, shape) with the next --shape.
template <class Tensor, class Shape, class ReadNpy, class ReadRaw>
std::vector<Tensor> read_inputs(const std::vector<std::string>& paths, const std::vector<Shape>& shapes,
                                ReadNpy read_npy, ReadRaw read_raw) {
  std::vector<Tensor> inputs;
  size_t raw = 0;
  for (const auto& p : paths) {
    if (ends_with(p, ".npy")) {
      inputs.push_back(read_npy(p));
    } else {
      if (raw >= shapes.size()) throw UsageError("raw input '" + p + "' needs a --shape (one per raw input)");
      inputs.push_back(read_raw(p, shapes[raw++]));
    }
  }
  return inputs;
}

// Writes a C-contiguous payload as a version 1.0 .npy file (header padded to 64 bytes).
template <class Dims>
void write_npy_file(const std::filesystem::path& path, const char* descr, const Dims& dims, const void* data,
                    size_t nbytes) {
  std::string shape = dims.size() == 1 ? "(" + std::to_string(dims[0]) + ",)" : shape_str(dims, "(", ")");
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  if (!f) throw std::runtime_error("cannot write '" + path.string() + "'");
}

// ---------------------------------------------------------------------------
// Reporting an output: its line on stdout (name, shape, dtype, checksums), its entry in the
// outputs.json listing, and the file name it gets under --out (returned).
inline std::string report_output(std::ostream& os, std::ostream& listing, size_t index, const std::string& name,
                                 const std::string& shape, const std::string& dtype, double sum, double abs_sum) {
  os << std::setprecision(10) << name << "\tshape=" << shape << "\tdtype=" << dtype << "\tsum=" << sum
     << "\tabs_sum=" << abs_sum << "\n";
  std::string file = std::to_string(index) + "_" + safe_file_name(name) + ".npy";
  listing << (index ? ", " : "") << "{\"name\": " << json_quote(name) << ", \"file\": " << json_quote(file)
          << ", \"shape\": " << shape << ", \"dtype\": " << json_quote(dtype) << std::setprecision(17)
          << ", \"sum\": " << sum << ", \"abs_sum\": " << abs_sum << "}";
  return file;
}

// The value of the option argv[i] (advancing i), or a UsageError when it is the last argument.
inline std::string option_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
  return argv[++i];
}

}  // namespace fxexport

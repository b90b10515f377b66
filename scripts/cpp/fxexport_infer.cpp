// fxexport_infer: run an fxexport artifact from C++ and write every output by name.
//
//   fxexport_infer ARTIFACT INPUT [INPUT ...] [--shape 1,3,224,224] [--out DIR]
//                  [--threads N] [--repeat N] [--info] [--no-cpu-check]
//
// ARTIFACT is a TorchScript archive (.pt / .ts, from fxexport.export_torchscript)
// or an AOTInductor package (.pt2, from fxexport.export_aoti). Each INPUT is a
// .npy file, or raw little-endian float32 whose shape is given by one --shape
// option per raw input, in order.
//
// Output names come from the artifact itself: the module's `output_names`
// attribute for TorchScript, the "fxexport" manifest (a JSON string) in the
// package metadata for AOTInductor. For each output the program prints its name,
// shape, dtype and checksums (sum and sum of absolute values, in double), and
// with --out DIR writes DIR/<name>.npy plus DIR/outputs.json, which lists the
// outputs in order: [{"name", "file", "shape", "dtype", "sum", "abs_sum"}].
//
// --info prints the artifact's manifest and output names without running it.
// --repeat N runs the model N more times after the first run and prints the
// median latency in milliseconds.
//
// An AOTInductor package is compiled for the CPU features of the machine that
// built it (metadata AOTI_CPU_ISA); before loading one, the program checks that
// this CPU has them (/proc/cpuinfo) and refuses with exit code 3 if not, rather
// than crash with an illegal instruction. --no-cpu-check skips that.
//
// Exit codes: 0 ok, 2 bad usage or unreadable input, 3 the artifact failed to
// load or run, or its outputs do not match its output names.

#include <torch/script.h>
#include <torch/torch.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;

namespace {

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

// ---------------------------------------------------------------------------
// .npy read / write (version 1.x / 2.x headers, C order, little endian).

struct DtypeInfo {
  const char* descr;
  c10::ScalarType type;
};
const DtypeInfo kDtypes[] = {
    {"<f4", torch::kFloat32}, {"<f8", torch::kFloat64}, {"<f2", torch::kFloat16},
    {"<i8", torch::kInt64},   {"<i4", torch::kInt32},   {"<i2", torch::kInt16},
    {"|i1", torch::kInt8},    {"|u1", torch::kUInt8},   {"|b1", torch::kBool},
};

// The manifest's dtype names ("float32"), as torch writes them in Python.
std::string dtype_name(c10::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kInt64: return "int64";
    case torch::kInt32: return "int32";
    case torch::kInt16: return "int16";
    case torch::kInt8: return "int8";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(type);
  }
}

std::string header_value(const std::string& header, const std::string& key) {
  auto pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw UsageError("npy header has no '" + key + "'");
  pos = header.find(':', pos) + 1;
  while (header[pos] == ' ') ++pos;
  if (header[pos] == '\'') {
    auto end = header.find('\'', pos + 1);
    return header.substr(pos + 1, end - pos - 1);
  }
  if (header[pos] == '(') {
    auto end = header.find(')', pos);
    return header.substr(pos + 1, end - pos - 1);
  }
  auto end = header.find_first_of(",}", pos);
  return header.substr(pos, end - pos);
}

torch::Tensor read_npy(const std::string& path) {
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
  std::string header(header_len, '\0');
  f.read(header.data(), header_len);
  std::string descr = header_value(header, "descr");
  if (header_value(header, "fortran_order") != "False")
    throw UsageError("'" + path + "' is Fortran-ordered; save it C-contiguous (np.ascontiguousarray)");
  std::vector<int64_t> shape;
  std::stringstream dims(header_value(header, "shape"));
  std::string item;
  while (std::getline(dims, item, ',')) {
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (!item.empty()) shape.push_back(std::stoll(item));
  }
  const DtypeInfo* info = nullptr;
  for (const auto& d : kDtypes)
    if (descr == d.descr) info = &d;
  if (!info) throw UsageError("'" + path + "' has dtype '" + descr + "'; expected one of <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1");
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(info->type));
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) throw UsageError("'" + path + "' is shorter than its header says");
  return t;
}

std::string shape_str(at::IntArrayRef shape, const char* open = "[", const char* close = "]") {
  std::ostringstream o;
  o << open;
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << close;
  return o.str();
}

void write_npy(const torch::Tensor& tensor, const fs::path& path) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  if (t.scalar_type() == torch::kBFloat16) t = t.to(torch::kFloat32);
  const DtypeInfo* info = nullptr;
  for (const auto& d : kDtypes)
    if (t.scalar_type() == d.type) info = &d;
  if (!info) throw std::runtime_error(std::string("cannot write dtype ") + c10::toString(t.scalar_type()) + " to .npy");
  std::string shape = t.dim() == 1 ? "(" + std::to_string(t.size(0)) + ",)" : shape_str(t.sizes(), "(", ")");
  std::string header = std::string("{'descr': '") + info->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) throw std::runtime_error("cannot write '" + path.string() + "'");
}

torch::Tensor read_raw(const std::string& path, const std::vector<int64_t>& shape) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw UsageError("cannot open input '" + path + "'");
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  auto size = static_cast<size_t>(f.tellg());
  if (size != t.nbytes())
    throw UsageError("raw input '" + path + "' has " + std::to_string(size) + " bytes; shape " + shape_str(shape) +
                     " as float32 needs " + std::to_string(t.nbytes()));
  f.seekg(0);
  f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  return t;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      shape.push_back(std::stoll(item));
    } catch (const std::exception&) {
      throw UsageError("--shape '" + text + "' is not a comma-separated list of ints, e.g. 1,3,224,224");
    }
  }
  if (shape.empty()) throw UsageError("--shape is empty; give e.g. 1,3,224,224");
  return shape;
}

// ---------------------------------------------------------------------------
// Artifacts.

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Artifact {
  virtual ~Artifact() = default;
  virtual std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) = 0;
  std::string kind;
  std::string manifest_json;  // empty when the artifact carries none
  std::vector<std::string> output_names;
};

std::vector<std::string> names_from_manifest(const Json& manifest) {
  std::vector<std::string> names;
  const Json* outputs = manifest.get("outputs");
  if (!outputs || outputs->type != Json::Type::Array) throw std::runtime_error("manifest has no 'outputs' list");
  for (const auto& o : outputs->array) {
    const Json* name = o.get("name");
    if (!name || name->type != Json::Type::String) throw std::runtime_error("manifest output without a name");
    names.push_back(name->string);
  }
  return names;
}

struct TorchScriptArtifact : Artifact {
  torch::jit::script::Module module;
  explicit TorchScriptArtifact(const std::string& path) {
    kind = "torchscript";
    torch::jit::ExtraFilesMap extra{{"fxexport/manifest.json", ""}};
    module = torch::jit::load(path, torch::kCPU, extra);
    module.eval();
    manifest_json = extra["fxexport/manifest.json"];
    if (module.hasattr("output_names")) {
      for (const auto& v : module.attr("output_names").toList()) output_names.push_back(v.get().toStringRef());
    } else if (!manifest_json.empty()) {
      output_names = names_from_manifest(JsonParser(manifest_json).parse());
    } else {
      throw std::runtime_error("TorchScript module has no 'output_names' attribute and no fxexport manifest");
    }
  }
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) override {
    std::vector<torch::jit::IValue> args(inputs.begin(), inputs.end());
    torch::jit::IValue out = module.forward(args);
    std::vector<torch::Tensor> tensors;
    if (out.isTensor()) {
      tensors.push_back(out.toTensor());
    } else if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) tensors.push_back(v.toTensor());
    } else if (out.isTensorList()) {
      for (const auto& t : out.toTensorVector()) tensors.push_back(t);
    } else if (out.isList()) {
      for (const auto& v : out.toList()) tensors.push_back(v.get().toTensor());
    } else {
      throw std::runtime_error("forward returned " + out.tagKind() + "; expected a tuple of tensors");
    }
    return tensors;
  }
};

// An AOTInductor package's kernels use the vector instructions of the machine that compiled it
// (metadata AOTI_CPU_ISA, e.g. "AVX512 AVX512_VNNI"), and Inductor compiles with -march=native,
// so any extension that machine had (recorded by fxexport in the manifest's extra.cpu.flags);
// on a CPU without them the code crashes with an illegal instruction. Returns the
// /proc/cpuinfo flags this machine lacks ("" when fine or unknown). FXEXPORT_CPU_FLAGS, when
// set, replaces /proc/cpuinfo's flags (for tests).
std::string missing_cpu_flags(const std::string& isa, const std::vector<std::string>& recorded) {
  static const std::map<std::string, std::vector<std::string>> needs = {
      {"AVX2", {"avx2", "fma"}},
      {"AVX512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}},
      {"AVX512_VNNI", {"avx512_vnni"}},
      {"AVX512_BF16", {"avx512_bf16"}},
      {"AVX512_FP16", {"avx512_fp16"}},
      {"AMX", {"amx_tile"}},
      {"AMX_TILE", {"amx_tile"}},
      {"NEON", {"asimd"}},
      {"ASIMD", {"asimd"}},
      {"SVE", {"sve"}},
      {"SVE256", {"sve"}}};
  std::string flags_line;
  if (const char* env = std::getenv("FXEXPORT_CPU_FLAGS")) {
    flags_line = env;
  } else {
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line)) {
      if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
        flags_line = line.substr(line.find(':') + 1);
        break;
      }
    }
    if (flags_line.empty()) return "";
  }
  std::set<std::string> have;
  std::stringstream fs(flags_line);
  for (std::string f; fs >> f;) have.insert(f);
  std::set<std::string> missing;
  for (const auto& f : recorded)
    if (!have.count(f)) missing.insert(f);
  std::stringstream ws(isa);
  for (std::string word; ws >> word;) {
    for (auto& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto it = needs.find(word);
    if (it == needs.end()) continue;
    for (const auto& f : it->second)
      if (!have.count(f)) missing.insert(f);
  }
  std::string out;
  for (const auto& f : missing) out += (out.empty() ? "" : " ") + f;
  return out;
}

struct AotiArtifact : Artifact {
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  AotiArtifact(const std::string& path, bool check_cpu) {
    kind = "aoti";
    if (check_cpu) {
      // Read the metadata without loading the compiled code, which could crash on this CPU.
      auto meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
      std::string isa = meta.count("AOTI_CPU_ISA") ? meta["AOTI_CPU_ISA"] : "";
      std::vector<std::string> recorded;
      if (meta.count("fxexport")) {
        Json manifest = JsonParser(meta["fxexport"]).parse();
        const Json* extra = manifest.get("extra");
        const Json* cpu = extra ? extra->get("cpu") : nullptr;
        const Json* flags = cpu ? cpu->get("flags") : nullptr;
        if (flags)
          for (const auto& f : flags->array) recorded.push_back(f.string);
      }
      std::string missing = missing_cpu_flags(isa, recorded);
      if (!missing.empty())
        throw std::runtime_error("the package was compiled for " + (isa.empty() ? std::string("another CPU") : isa) +
                                 " but this CPU lacks " + missing +
                                 "; export it again on this machine (or pass --no-cpu-check)");
    }
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
    auto metadata = loader->get_metadata();
    auto it = metadata.find("fxexport");
    if (it == metadata.end()) throw std::runtime_error("package metadata has no 'fxexport' manifest (was it written by fxexport?)");
    manifest_json = it->second;
    output_names = names_from_manifest(JsonParser(manifest_json).parse());
  }
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs) override { return loader->run(inputs); }
};

std::vector<c10::ScalarType> manifest_input_dtypes(const std::string& manifest_json) {
  std::vector<c10::ScalarType> types;
  if (manifest_json.empty()) return types;
  std::map<std::string, c10::ScalarType> names;
  for (auto t : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16, torch::kInt64, torch::kInt32,
                 torch::kInt16, torch::kInt8, torch::kUInt8, torch::kBool})
    names[dtype_name(t)] = t;
  Json manifest = JsonParser(manifest_json).parse();
  const Json* inputs = manifest.get("inputs");
  if (!inputs) return types;
  for (const auto& i : inputs->array) {
    const Json* dtype = i.get("dtype");
    auto it = dtype ? names.find(dtype->string) : names.end();
    types.push_back(it == names.end() ? torch::kFloat32 : it->second);
  }
  return types;
}

std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') ? c : '_';
  if (out.empty() || out[0] == '.') out = "_" + out;
  return out;
}

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0
            << " ARTIFACT(.pt|.pt2) INPUT(.npy|raw float32) [INPUT ...] [--shape 1,3,224,224] [--out DIR]"
               " [--threads N] [--repeat N] [--info] [--no-cpu-check]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string artifact_path, out_dir;
  std::vector<std::string> input_paths;
  std::vector<std::vector<int64_t>> shapes;
  int threads = 0, repeat = 0;
  bool info = false, check_cpu = true;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw UsageError(a + " needs a value");
        return argv[++i];
      };
      if (a == "--shape") shapes.push_back(parse_shape(value()));
      else if (a == "--out") out_dir = value();
      else if (a == "--threads") threads = std::stoi(value());
      else if (a == "--repeat") repeat = std::stoi(value());
      else if (a == "--info") info = true;
      else if (a == "--no-cpu-check") check_cpu = false;
      else if (a == "-h" || a == "--help") return usage(argv[0]), 0;
      else if (a.rfind("--", 0) == 0) throw UsageError("unknown option " + a);
      else if (artifact_path.empty()) artifact_path = a;
      else input_paths.push_back(a);
    }
    if (artifact_path.empty() || (input_paths.empty() && !info)) return usage(argv[0]);
    if (!fs::exists(artifact_path)) throw UsageError("artifact '" + artifact_path + "' does not exist");
  } catch (const std::exception& e) {
    std::cerr << "fxexport_infer: error: " << e.what() << "\n";
    return 2;
  }
  if (threads > 0) torch::set_num_threads(threads);

  std::unique_ptr<Artifact> artifact;
  try {
    if (ends_with(artifact_path, ".pt2")) artifact = std::make_unique<AotiArtifact>(artifact_path, check_cpu);
    else artifact = std::make_unique<TorchScriptArtifact>(artifact_path);
  } catch (const std::exception& e) {
    std::cerr << "fxexport_infer: error: cannot load '" << artifact_path << "': " << e.what() << "\n";
    return 3;
  }
  std::cout << "artifact: " << artifact_path << " (" << artifact->kind << "), " << artifact->output_names.size()
            << " outputs\n";
  if (info) {
    std::cout << "manifest: " << (artifact->manifest_json.empty() ? "(none)" : artifact->manifest_json) << "\n";
    for (const auto& n : artifact->output_names) std::cout << "output: " << n << "\n";
    return 0;
  }

  std::vector<torch::Tensor> inputs;
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
    auto dtypes = manifest_input_dtypes(artifact->manifest_json);
    for (size_t i = 0; i < inputs.size() && i < dtypes.size(); ++i)
      if (inputs[i].scalar_type() != dtypes[i]) inputs[i] = inputs[i].to(dtypes[i]);
  } catch (const std::exception& e) {
    std::cerr << "fxexport_infer: error: " << e.what() << "\n";
    return 2;
  }

  std::vector<torch::Tensor> outputs;
  std::vector<double> times_ms;
  try {
    c10::InferenceMode guard;
    for (int r = 0; r <= repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      outputs = artifact->run(inputs);
      auto t1 = std::chrono::steady_clock::now();
      if (r > 0) times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  } catch (const std::exception& e) {
    std::cerr << "fxexport_infer: error: running '" << artifact_path << "' failed: " << e.what() << "\n";
    return 3;
  }
  if (outputs.size() != artifact->output_names.size()) {
    std::cerr << "fxexport_infer: error: the artifact returned " << outputs.size() << " outputs but names "
              << artifact->output_names.size() << "\n";
    return 3;
  }

  if (!out_dir.empty()) fs::create_directories(out_dir);
  std::ostringstream listing;
  listing << "{\"artifact\": " << json_quote(artifact_path) << ", \"kind\": " << json_quote(artifact->kind)
          << ", \"outputs\": [";
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& name = artifact->output_names[i];
    torch::Tensor t = outputs[i];
    torch::Tensor as_double = t.to(torch::kFloat64);
    double sum = as_double.sum().item<double>();
    double abs_sum = as_double.abs().sum().item<double>();
    std::string dtype = dtype_name(t.scalar_type());
    std::cout << std::setprecision(10) << name << "\tshape=" << shape_str(t.sizes()) << "\tdtype=" << dtype
              << "\tsum=" << sum << "\tabs_sum=" << abs_sum << "\n";
    std::string file = std::to_string(i) + "_" + safe_file_name(name) + ".npy";
    if (!out_dir.empty()) {
      try {
        write_npy(t, fs::path(out_dir) / file);
      } catch (const std::exception& e) {
        std::cerr << "fxexport_infer: error: " << e.what() << "\n";
        return 3;
      }
    }
    listing << (i ? ", " : "") << "{\"name\": " << json_quote(name) << ", \"file\": " << json_quote(file)
            << ", \"shape\": " << shape_str(t.sizes()) << ", \"dtype\": " << json_quote(dtype)
            << std::setprecision(17) << ", \"sum\": " << sum << ", \"abs_sum\": " << abs_sum << "}";
  }
  listing << "]";
  if (!times_ms.empty()) {
    std::sort(times_ms.begin(), times_ms.end());
    double median = times_ms[times_ms.size() / 2];
    std::cout << "latency: median " << std::setprecision(4) << median << " ms over " << times_ms.size() << " runs\n";
    listing << ", \"median_ms\": " << median;
  }
  listing << "}\n";
  if (!out_dir.empty()) {
    std::ofstream f(fs::path(out_dir) / "outputs.json");
    f << listing.str();
  }
  return 0;
}

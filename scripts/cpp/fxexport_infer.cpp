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

#include "fxexport_common.hpp"

namespace fs = std::filesystem;

namespace {

using namespace fxexport;  // fxexport_common.hpp: Json, UsageError, shape_str, ...

// ---------------------------------------------------------------------------
// .npy read / write: fxexport_common.hpp's, with torch tensors.

// The torch dtypes of fxexport::kNpyDescrs, in its order.
const c10::ScalarType kNpyTypes[] = {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kInt64, torch::kInt32,
                                     torch::kInt16,   torch::kInt8,    torch::kUInt8,   torch::kBool};
static_assert(sizeof(kNpyTypes) / sizeof(kNpyTypes[0]) == fxexport::kNpyDtypes);

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

torch::Tensor read_npy(const std::string& path) {
  fxexport::NpyReader npy(path);
  torch::Tensor t = torch::empty(npy.shape, torch::TensorOptions().dtype(kNpyTypes[npy.dtype]));
  npy.read(t.data_ptr(), t.nbytes());
  return t;
}

void write_npy(const torch::Tensor& tensor, const fs::path& path) {
  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  if (t.scalar_type() == torch::kBFloat16) t = t.to(torch::kFloat32);
  const auto* type = std::find(std::begin(kNpyTypes), std::end(kNpyTypes), t.scalar_type());
  if (type == std::end(kNpyTypes))
    throw std::runtime_error(std::string("cannot write dtype ") + c10::toString(t.scalar_type()) + " to .npy");
  fxexport::write_npy_file(path, fxexport::kNpyDescrs[type - kNpyTypes], t.sizes(), t.data_ptr(), t.nbytes());
}

torch::Tensor read_raw(const std::string& path, const std::vector<int64_t>& shape) {
  fxexport::RawReader raw(path);
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  raw.read(t.data_ptr(), t.nbytes(), shape);
  return t;
}

// ---------------------------------------------------------------------------
// Artifacts.
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
      auto value = [&] { return fxexport::option_value(argc, argv, i); };
      if (a == "--shape") shapes.push_back(fxexport::parse_shape(value(), false));
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
    inputs = fxexport::read_inputs<torch::Tensor>(input_paths, shapes, read_npy, read_raw);
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
    std::string file = report_output(std::cout, listing, i, name, shape_str(t.sizes()), dtype, sum, abs_sum);
    if (!out_dir.empty()) {
      try {
        write_npy(t, fs::path(out_dir) / file);
      } catch (const std::exception& e) {
        std::cerr << "fxexport_infer: error: " << e.what() << "\n";
        return 3;
      }
    }
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

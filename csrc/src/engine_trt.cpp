// The TensorRT engine kind (TensorRT 10+ C++ API only: named I/O tensors, setInputShape /
// setTensorAddress / enqueueV3; nothing deprecated). Built only when TensorRT was found
// (CTDN_WITH_TENSORRT, with CUDA); otherwise open_tensorrt throws an Error saying how to rebuild.
//
// Contract with ctdn::Runtime (runtime.hpp): Engine::run gets device pointers on the engine's GPU and
// is synchronous for the host: it runs on this engine's own non-blocking stream and returns when y is
// written. The caller must have finished writing x and dose (synchronise its stream first); it may
// reuse y (and its other buffers) as soon as run returns. Runtime stages host data through its own
// device buffers; with the same buffers call after call (as Runtime's grow-only buffers give) the
// captured CUDA graphs replay without any copy.
//
// CUDA graphs: one graph per (n, h, w, x, dose, y), captured the first time that call is seen after
// an ordinary enqueueV3 (the TensorRT documentation and trtexec do one first, so the capture holds no
// lazy initialisation), then replayed. A graph bakes in the shapes and the tensor addresses, hence the
// pointers in the key. An engine whose enqueue cannot be captured falls back to enqueueV3 for that key.

#include "ctdn/runtime.hpp"

#ifndef CTDN_WITH_TENSORRT

namespace ctdn {

std::unique_ptr<Engine> open_tensorrt(const std::string& path, const Sidecar&, const Options&) {
  throw Error(path +
              ": this ctdn runtime was built without TensorRT (set TENSORRT_ROOT and rebuild: python -m "
              "ctdn.runtime.build)");
}

}  // namespace ctdn

#else  // CTDN_WITH_TENSORRT

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "check.hpp"

namespace ctdn {
namespace {

// Warnings and errors to stderr; the last error of this thread is kept for the exception message.
// One logger for the process: TensorRT keeps using the logger an IRuntime was created with for every
// object made through it, and requires it to be thread-safe.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity > Severity::kWARNING) return;  // kINFO, kVERBOSE
    const bool error = severity == Severity::kERROR || severity == Severity::kINTERNAL_ERROR;
    try {
      if (error) last_error() = msg;
      std::lock_guard<std::mutex> lock(mu_);
      std::cerr << "ctdn: TensorRT " << (error ? "error: " : "warning: ") << msg << std::endl;
    } catch (...) {  // log() is noexcept
    }
  }

  static std::string& last_error() {
    thread_local std::string e;
    return e;
  }

 private:
  std::mutex mu_;
};

Logger& logger() {
  static Logger* l = new Logger();  // never destroyed: engines may outlive static destruction order
  return *l;
}

std::string with_trt_error(const std::string& msg) {
  const std::string& e = Logger::last_error();
  return e.empty() ? msg : msg + " (TensorRT: " + e + ")";
}

void cuda_ok(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("TensorRT engine: " + what + " failed: " + cudaGetErrorString(e));
}

std::string rebuild_hint(const Sidecar& sc) {
  return "rebuild it on this machine" + (sc.rebuild.empty() ? std::string() : ": " + sc.rebuild);
}

// "10.13.0.35" -> {10, 13}; {-1, -1} when it does not parse.
std::pair<int, int> major_minor_ints(const std::string& v) {
  int major = -1, minor = -1;
  if (std::sscanf(v.c_str(), "%d.%d", &major, &minor) != 2) return {-1, -1};
  return {major, minor};
}

// The checks only this kind can make: the GPU and the TensorRT library (check_common did the rest).
void check_machine(const Sidecar& sc, const Options& o, int device, int lib_version) {
  if (sc.device_type != "cuda") detail::mismatch(sc, o, "device.type", "'" + sc.device_type + "'", "'cuda'");

  int cc_major = 0, cc_minor = 0;
  cuda_ok(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, device), "reading the GPU");
  cuda_ok(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, device), "reading the GPU");
  cudaDeviceProp prop{};
  cuda_ok(cudaGetDeviceProperties(&prop, device), "reading the GPU");
  const std::string cc = std::to_string(cc_major) + "." + std::to_string(cc_minor);
  const std::string here_gpu = "'" + cc + "' (" + prop.name + ")";
  const std::string hw = sc.hardware_compatibility.empty() ? "none" : sc.hardware_compatibility;
  if (hw == "none" || hw == "same_compute_capability") {
    if (sc.compute_capability != cc) {
      detail::mismatch(sc, o, "device.compute_capability",
                       "'" + sc.compute_capability + "' (" + sc.device_name + ")", here_gpu);
    } else if (hw == "none" && !sc.device_name.empty() && sc.device_name != prop.name) {
      // Same architecture, another GPU model: runs, but TensorRT tuned it for the other one.
      std::cerr << "ctdn: warning: " << sc.path << ": built on " << sc.device_name << ", this GPU is "
                << prop.name << " (same compute capability " << cc << "); rebuild for best speed"
                << (sc.rebuild.empty() ? "" : ": " + sc.rebuild) << std::endl;
    }
  } else if (hw == "ampere_plus") {
    if (cc_major < 8)
      detail::mismatch(sc, o, "device.compute_capability (hardware compatibility ampere_plus)", "'>= 8.0'",
                       here_gpu);
  } else {
    detail::mismatch(sc, o, "compatibility.hardware", "'" + hw + "'",
                     "a runtime that knows none, ampere_plus and same_compute_capability");
  }

  // getInferLibVersion(): (major * 100 + minor) * 100 + patch.
  const int here_major = lib_version / 10000, here_minor = lib_version / 100 % 100;
  const std::string here = std::to_string(here_major) + "." + std::to_string(here_minor);
  const auto built = major_minor_ints(sc.tensorrt_version);
  if (!sc.version_compatible) {
    if (detail::major_minor(sc.tensorrt_version) != here)
      detail::mismatch(sc, o, "versions.tensorrt", "'" + sc.tensorrt_version + "'",
                       "'" + here + "' (the TensorRT library this runtime loaded)");
  } else if (built.first != here_major || std::make_pair(here_major, here_minor) < built) {
    // Version-compatible engines run on the same or a later TensorRT, never an older one; of the same
    // major version, as ctdn.deploy.sidecar rules (TensorRT itself documents later majors too).
    detail::mismatch(sc, o, "versions.tensorrt (version compatible)", "'" + sc.tensorrt_version + "'",
                     "'" + here + "' (a version-compatible engine needs the same or a later TensorRT of the "
                     "same major version)");
  }
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open the engine file");
  const std::streamsize size = f.tellg();
  std::vector<char> blob(static_cast<size_t>(std::max<std::streamsize>(size, 0)));
  f.seekg(0);
  if (size <= 0 || !f.read(blob.data(), size)) throw Error(path + ": cannot read the engine file (empty?)");
  return blob;
}

struct Range {
  int64_t lo = 0, hi = 0;
};

class TensorRTEngine final : public Engine {
 public:
  TensorRTEngine(const std::string& path, const Sidecar& sc, const Options& o)
      : path_(path), device_(o.device), cuda_graphs_(o.cuda_graphs) {
    detail::check_common(path, sc, o, "tensorrt");  // kind, file present with the recorded size
    int count = 0;
    cuda_ok(cudaGetDeviceCount(&count), "finding a CUDA device");
    if (o.device < 0 || o.device >= count)
      throw Error(path + ": CUDA device " + std::to_string(o.device) + " does not exist (this machine has " +
                  std::to_string(count) + ")");
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");

    check_machine(sc, o, device_, getInferLibVersion());

    Logger::last_error().clear();
    runtime_.reset(nvinfer1::createInferRuntime(logger()));
    if (!runtime_) throw Error(with_trt_error(path + ": could not create the TensorRT runtime"));
    // A version-compatible plan carries its own lean runtime (host code); the sidecar says it was built
    // that way on purpose. Only load engines you trust (true of any engine: TensorRT plans are code).
    if (sc.version_compatible) runtime_->setEngineHostCodeAllowed(true);
    const std::vector<char> blob = read_file(path);
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) {
      throw Error(with_trt_error(path + ": TensorRT could not deserialize this engine (built with TensorRT " +
                                 sc.tensorrt_version + " for " + sc.device_name + ", compute capability " +
                                 sc.compute_capability + "); the file is corrupt or was built elsewhere; " +
                                 rebuild_hint(sc)));
    }
    check_io(sc);
    read_profile(sc, o);

    context_.reset(engine_->createExecutionContext());
    if (!context_)
      throw Error(with_trt_error(path + ": could not create a TensorRT execution context (out of GPU memory?)"));
    cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~TensorRTEngine() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& kv : graphs_)
      if (kv.second) cudaGraphExecDestroy(kv.second);
    context_.reset();
    engine_.reset();
    runtime_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  bool on_cuda() const override { return true; }

  void run(const float* x, const float* dose, float* y, int n, int h, int w) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!x || !dose || !y) throw Error(path_ + ": run: null x, dose or y pointer");
    check_range("batch", n, batch_);
    check_range("height", h, height_);
    check_range("width", w, width_);
    cuda_ok(cudaSetDevice(device_), "cudaSetDevice");  // per host thread
    Logger::last_error().clear();

    const Key key{n, h, w, x, dose, y};
    bind(key);
    auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second) {
      cuda_ok(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
    } else {
      enqueue();
      if (cuda_graphs_ && it == graphs_.end()) {
        // This enqueue was the one the capture must follow; capture the next identical call's work now.
        cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        capture(key);
      }
    }
    cuda_ok(cudaStreamSynchronize(stream_), "running the TensorRT engine");
  }

 private:
  using Key = std::tuple<int, int, int, const float*, const float*, float*>;
  static constexpr size_t kMaxGraphs = 16;

  void check_io(const Sidecar& sc) {
    // The ctdn export contract (ctdn.export.IO): inputs x (n, 1, h, w) and dose (n,), output y, float32.
    struct Want {
      const char* name;
      nvinfer1::TensorIOMode mode;
      int rank;
    };
    const Want want[] = {{"x", nvinfer1::TensorIOMode::kINPUT, 4},
                         {"dose", nvinfer1::TensorIOMode::kINPUT, 1},
                         {"y", nvinfer1::TensorIOMode::kOUTPUT, 4}};
    std::string found;
    const int nio = engine_->getNbIOTensors();
    for (int i = 0; i < nio; ++i) found += std::string(i ? ", " : "") + engine_->getIOTensorName(i);
    const std::string bad = path_ + ": the engine's I/O tensors (" + found + ") are not ctdn's";
    if (nio != 3) throw Error(bad + ": expected inputs x, dose and output y; " + rebuild_hint(sc));
    for (const Want& t : want) {
      bool present = false;
      for (int i = 0; i < nio; ++i) present = present || std::string(engine_->getIOTensorName(i)) == t.name;
      if (!present || engine_->getTensorIOMode(t.name) != t.mode)
        throw Error(bad + ": '" + t.name + "' is missing or has the wrong direction; " + rebuild_hint(sc));
      if (engine_->getTensorDataType(t.name) != nvinfer1::DataType::kFLOAT)
        throw Error(bad + ": '" + t.name + "' is not float32 (ctdn engines keep fp32 I/O at any precision); " +
                    rebuild_hint(sc));
      if (engine_->getTensorFormat(t.name) != nvinfer1::TensorFormat::kLINEAR)
        throw Error(bad + ": '" + t.name + "' is not in the linear (NCHW) format; " + rebuild_hint(sc));
      if (engine_->getTensorShape(t.name).nbDims != t.rank)
        throw Error(bad + ": '" + t.name + "' has rank " + std::to_string(engine_->getTensorShape(t.name).nbDims) +
                    ", expected " + std::to_string(t.rank) + "; " + rebuild_hint(sc));
    }
  }

  // Shape ranges from optimisation profile 0 (the one ctdn-build-engine makes; the context uses it).
  void read_profile(const Sidecar& sc, const Options& o) {
    if (engine_->getNbOptimizationProfiles() < 1)
      throw Error(path_ + ": the engine has no optimisation profile; " + rebuild_hint(sc));
    const nvinfer1::Dims lo = engine_->getProfileShape("x", 0, nvinfer1::OptProfileSelector::kMIN);
    const nvinfer1::Dims hi = engine_->getProfileShape("x", 0, nvinfer1::OptProfileSelector::kMAX);
    if (lo.nbDims != 4 || hi.nbDims != 4)
      throw Error(path_ + ": the engine has no profile for input x; " + rebuild_hint(sc));
    batch_ = {lo.d[0], hi.d[0]};
    height_ = {lo.d[2], hi.d[2]};
    width_ = {lo.d[3], hi.d[3]};
    auto fmt = [](int64_t a, int64_t b, int64_t c, int64_t d, int64_t e, int64_t f) {
      return "batch " + std::to_string(a) + ".." + std::to_string(b) + ", height " + std::to_string(c) + ".." +
             std::to_string(d) + ", width " + std::to_string(e) + ".." + std::to_string(f);
    };
    // Runtime trusts the sidecar's ranges; they must lie inside the engine's profile.
    if (sc.batch_min < batch_.lo || sc.batch_max > batch_.hi || sc.height_min < height_.lo ||
        sc.height_max > height_.hi || sc.width_min < width_.lo || sc.width_max > width_.hi)
      detail::mismatch(sc, o, "shapes",
                       fmt(sc.batch_min, sc.batch_max, sc.height_min, sc.height_max, sc.width_min, sc.width_max),
                       "the engine's profile " +
                           fmt(batch_.lo, batch_.hi, height_.lo, height_.hi, width_.lo, width_.hi));
  }

  void check_range(const char* what, int v, const Range& r) const {
    if (v < r.lo || v > r.hi)
      throw Error(path_ + ": " + what + " " + std::to_string(v) + " is outside the engine's profile (" +
                  std::to_string(r.lo) + ".." + std::to_string(r.hi) + ")");
  }

  // Input shapes and tensor addresses for this call (host-side state of the context).
  void bind(const Key& key) {
    if (bound_ && *bound_ == key) return;
    const auto [n, h, w, x, dose, y] = key;
    const nvinfer1::Dims4 xd(n, 1, h, w);
    nvinfer1::Dims dd{};
    dd.nbDims = 1;
    dd.d[0] = n;
    bound_.reset();
    if (!context_->setInputShape("x", xd) || !context_->setInputShape("dose", dd))
      throw Error(with_trt_error(path_ + ": TensorRT refused the input shape " + std::to_string(n) + "x1x" +
                                 std::to_string(h) + "x" + std::to_string(w)));
    const nvinfer1::Dims yd = context_->getTensorShape("y");
    if (yd.nbDims != 4 || yd.d[0] != n || yd.d[1] != 1 || yd.d[2] != h || yd.d[3] != w)
      throw Error(path_ + ": the engine's output y does not have the input's shape (" + std::to_string(n) + ", 1, " +
                  std::to_string(h) + ", " + std::to_string(w) + ")");
    if (!context_->setInputTensorAddress("x", x) || !context_->setInputTensorAddress("dose", dose) ||
        !context_->setTensorAddress("y", y))
      throw Error(with_trt_error(path_ + ": TensorRT refused a tensor address (alignment?)"));
    bound_ = std::make_unique<Key>(key);
  }

  void enqueue() {
    if (!context_->enqueueV3(stream_)) throw Error(with_trt_error(path_ + ": TensorRT enqueueV3 failed"));
  }

  // Capture one enqueueV3 into a graph for `key` (as trtexec does); on failure remember that this key
  // runs without a graph. The captured work is not executed here.
  void capture(const Key& key) {
    if (graphs_.size() >= kMaxGraphs) {  // bounded: callers that change buffers every call get no graphs
      for (auto& kv : graphs_)
        if (kv.second) cudaGraphExecDestroy(kv.second);
      graphs_.clear();
    }
    cudaGraphExec_t exec = nullptr;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
      const bool enqueued = context_->enqueueV3(stream_);
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
      if (enqueued && end == cudaSuccess && graph) {
        if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) exec = nullptr;
      }
      if (graph) cudaGraphDestroy(graph);
    }
    if (!exec) {
      cudaGetLastError();  // clear the failed capture's error; this key runs with plain enqueueV3
      std::cerr << "ctdn: warning: " << path_ << ": this TensorRT engine cannot be captured in a CUDA graph"
                << " for batch " << std::get<0>(key) << " at " << std::get<1>(key) << "x" << std::get<2>(key)
                << "; running it without one" << std::endl;
    }
    graphs_[key] = exec;
  }

  std::string path_;
  int device_ = 0;
  bool cuda_graphs_ = true;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;  // declared first: destroyed last
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  Range batch_, height_, width_;
  std::unique_ptr<Key> bound_;
  std::map<Key, cudaGraphExec_t> graphs_;  // nullptr: this key cannot be captured
  std::mutex mu_;
};

}  // namespace

std::unique_ptr<Engine> open_tensorrt(const std::string& path, const Sidecar& sc, const Options& o) {
  return std::make_unique<TensorRTEngine>(path, sc, o);
}

}  // namespace ctdn

#endif  // CTDN_WITH_TENSORRT

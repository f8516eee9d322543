// ctdn C++ runtime: load a deployed ctdn model (TensorRT engine or AOTInductor package) and denoise
// CT slices in Hounsfield units, from C++ without Python. The pybind11 module (ctdn._runtime) is a
// thin layer over this header.
//
// One slice through it: HU (int16 or float32, host) -> pre (HU window -> [-1, 1], 16 replicated pixels
// of context on every side, then padded to the network's multiple) -> Engine::run (the network, unit
// space) -> post (crop, unit -> HU, pass-through outside the window and of padding) -> HU out, same
// dtype. The arithmetic is the same as ctdn.Denoiser's in Python.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ctdn {

// Every failure the runtime reports on purpose: a bad file, a sidecar that does not match this
// machine, a bad shape or dose. The message names the problem (and the rebuild command for engines).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The network returned NaN/inf for finite input (broken weights or a broken engine); nothing is written
// for the slices of that network call. Python: ctdn.errors.ModelError.
class ModelError : public Error {
 public:
  using Error::Error;
};

// The JSON sidecar written beside every deployed model ("<file>.json", format "ctdn-engine/1").
struct Sidecar {
  std::string path;              // the sidecar file itself
  std::string kind;              // "tensorrt" or "aoti"
  std::string model_name;        // e.g. "edge"
  std::string fingerprint;       // ctdn.export.fingerprint(model): config + weights
  std::string precision;         // "fp32", "fp16" or "bf16"
  float hu_lo = -1000.f, hu_hi = 1000.f;
  int multiple = 1;              // H and W given to the network are multiples of this
  int batch_min = 1, batch_opt = 1, batch_max = 1;
  int height_min = 0, height_opt = 0, height_max = 0;
  int width_min = 0, width_opt = 0, width_max = 0;
  std::string device_type;       // "cuda" or "cpu"
  std::string device_name;       // GPU name, e.g. "NVIDIA H100 80GB HBM3"
  std::string compute_capability;  // "9.0"
  std::string tensorrt_version, cuda_version, torch_version;
  std::string hardware_compatibility = "none";
  bool version_compatible = false;
  long long bytes = -1;          // size of the engine/package file
  std::string rebuild;           // the command that rebuilds this file on this machine

  static Sidecar read(const std::string& json_path);  // throws Error on a missing/corrupt sidecar
};

// The network only: x (n, 1, h, w) float32 in [-1, 1], dose (n,) float32, y like x. Pointers are
// on the engine's device (host memory for a CPU engine, device memory for a CUDA one).
class Engine {
 public:
  virtual ~Engine() = default;
  virtual void run(const float* x, const float* dose, float* y, int n, int h, int w) = 0;
  virtual bool on_cuda() const = 0;
};

struct Options {
  int device = 0;            // CUDA device index (ignored on the CPU)
  int max_batch = 0;         // slices per network call; 0: the sidecar's batch_max
  bool cuda_graphs = true;   // capture and replay for repeated fixed shapes (TensorRT kind)
  bool check = true;         // refuse a sidecar that does not match this machine (false: warn only)
};

// Opens "<path>" after checking "<path>.json". Thread-safe: calls are serialised per Runtime; use one
// Runtime per thread/stream for concurrency.
class Runtime {
 public:
  explicit Runtime(const std::string& path, Options options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Sidecar& sidecar() const;

  // Unit space, host pointers, h and w multiples of sidecar().multiple; batches of any n.
  void infer(const float* x, const float* dose, float* y, int n, int h, int w);

  // HU in, HU out (host pointers, any h and w >= 1): what a scanner calls. dose: n fractions in (0, 1].
  // Throws ModelError if the network returns NaN/inf (the slices of earlier network calls are written).
  void denoise(const int16_t* in, int16_t* out, int n, int h, int w, const float* dose);
  void denoise(const float* in, float* out, int n, int h, int w, const float* dose);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Engine kinds (each compiled only when its toolchain was found; otherwise they throw Error naming it).
std::unique_ptr<Engine> open_aoti(const std::string& path, const Sidecar& sc, const Options& o);
std::unique_ptr<Engine> open_tensorrt(const std::string& path, const Sidecar& sc, const Options& o);

// What this build contains, e.g. {"aoti", "cuda", "tensorrt"}.
std::vector<std::string> build_features();

}  // namespace ctdn

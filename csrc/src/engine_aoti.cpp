// The AOTInductor engine kind: a .pt2 package (torch.export + aoti_compile_and_package, written by
// ctdn.export.to_aoti) run through libtorch's package loader, on the CPU or a CUDA device.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#ifdef CTDN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <memory>
#include <string>
#include <vector>

#include "check.hpp"
#include "ctdn/runtime.hpp"

namespace ctdn {

namespace {

std::string message(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

class AotiEngine : public Engine {
 public:
  AotiEngine(const std::string& path, const Sidecar& sc, const Options& o)
      : path_(path), device_(c10::kCPU) {
    const bool cuda = sc.device_type == "cuda";
    if (cuda) device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(o.device));
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
          static_cast<c10::DeviceIndex>(cuda ? o.device : -1));
    } catch (const std::exception& e) {
      throw Error(path + ": libtorch cannot load this AOTInductor package (" + message(e) +
                  "); it is corrupt or was built by another torch: rebuild it on this machine: " + sc.rebuild);
    }
    auto meta = loader_->get_metadata();
    auto it = meta.find("AOTI_DEVICE_KEY");
    if (it != meta.end() && it->second != sc.device_type)
      detail::mismatch(sc, o, "device.type", "'" + sc.device_type + "'", "'" + it->second + "'",
                       "the package inside was compiled for that device: corrupt or replaced");
  }

  bool on_cuda() const override { return device_.is_cuda(); }

  void run(const float* x, const float* dose, float* y, int n, int h, int w) override {
    try {
      c10::InferenceMode guard;
      auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
      // Views of the caller's buffers: no copies in. The package only reads its inputs.
      std::vector<at::Tensor> inputs = {
          at::from_blob(const_cast<float*>(x), {n, 1, h, w}, opts),
          at::from_blob(const_cast<float*>(dose), {n}, opts),
      };
      std::vector<at::Tensor> outputs = loader_->run(inputs);
      if (outputs.size() != 1 || outputs[0].sizes() != inputs[0].sizes())
        throw Error(path_ + ": the package returned " + std::to_string(outputs.size()) +
                    " outputs, expected one (n, 1, h, w) tensor: not a ctdn model package");
      at::from_blob(y, {n, 1, h, w}, opts).copy_(outputs[0]);
      if (on_cuda()) torch::cuda::synchronize(device_.index());  // Engine::run returns when y is written
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(path_ + ": running the AOTInductor package on " + std::to_string(n) + "x1x" + std::to_string(h) +
                  "x" + std::to_string(w) + " failed: " + message(e));
    }
  }

 private:
  std::string path_;
  c10::Device device_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

std::unique_ptr<Engine> open_aoti(const std::string& path, const Sidecar& sc, const Options& o) {
  // In ctdn.deploy.sidecar's order: kind, file and size, device, torch version.
  detail::check_common(path, sc, o, "aoti");
  if (sc.device_type == "cuda") {
    if (!torch::cuda::is_available())
      detail::mismatch(sc, o, "device.type", "'cuda'", "'cpu'",
                       "an AOTInductor package runs only on the device type it was compiled for");
    else if (o.device < 0 || o.device >= torch::cuda::device_count())
      throw Error(path + ": CUDA device " + std::to_string(o.device) + " does not exist (this machine has " +
                  std::to_string(int(torch::cuda::device_count())) + ")");
#ifdef CTDN_WITH_CUDA
    else if (!sc.compute_capability.empty()) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, o.device) != cudaSuccess)
        throw Error(path + ": cannot read CUDA device " + std::to_string(o.device));
      std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
      if (cc != sc.compute_capability)
        detail::mismatch(sc, o, "device.compute_capability", "'" + sc.compute_capability + "'", "'" + cc + "'",
                         "built on " + sc.device_name + ", this GPU is " + prop.name);
    }
#endif
  } else if (sc.device_type != "cpu") {
    detail::mismatch(sc, o, "device.type", "'" + sc.device_type + "'", "'cpu' or 'cuda'",
                     "the aoti loader runs packages for cpu or cuda");
  }
  // AOTInductor packages are compiled C++ against one torch's ABI: only that torch can run them.
  const std::string here = detail::public_version(TORCH_VERSION);
  if (detail::public_version(sc.torch_version) != here)
    detail::mismatch(sc, o, "versions.torch", sc.torch_version.empty() ? "None" : "'" + sc.torch_version + "'",
                     "'" + here + "'", "AOTInductor packages are tied to the torch that compiled them");
  return std::make_unique<AotiEngine>(path, sc, o);
}

}  // namespace ctdn

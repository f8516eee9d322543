// ctdn::Runtime: sidecar checks, the engine kind, batching, HU pre/post (CPU, or CUDA kernels when the
// engine runs on a GPU) and one mutex per Runtime.

#include "ctdn/runtime.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "check.hpp"
#include "ctdn/hu.hpp"

#ifdef CTDN_WITH_CUDA
#include <cuda_runtime_api.h>

#include "ctdn/hu_cuda.hpp"
#endif

namespace ctdn {

namespace {

std::string ends(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0 ? suffix
                                                                                                      : "";
}

// The kind a file's extension says it is ("" when it says nothing).
std::string kind_of(const std::string& path) {
  if (!ends(path, ".pt2").empty()) return "aoti";
  if (!ends(path, ".engine").empty() || !ends(path, ".plan").empty()) return "tensorrt";
  return "";
}

void check_doses(const float* dose, int n) {
  if (!dose) throw Error("dose: a null pointer (give one dose fraction per slice)");
  for (int i = 0; i < n; ++i)
    if (!(std::isfinite(dose[i]) && dose[i] > 0.f && dose[i] <= 1.f))
      throw Error("dose[" + std::to_string(i) + "] = " + std::to_string(dose[i]) +
                  ": the dose is the fraction of a routine full dose, in (0, 1]");
}

void check_finite(const float* hu, int n, int h, int w) {
  const size_t total = static_cast<size_t>(n) * h * w;
  for (size_t k = 0; k < total; ++k)
    if (!std::isfinite(hu[k])) {
      size_t i = k / (static_cast<size_t>(h) * w), r = k / w % h, c = k % w;
      throw Error("the input has a NaN/inf value at slice " + std::to_string(i) + ", row " + std::to_string(r) +
                  ", column " + std::to_string(c) + "; fix or mask it first");
    }
}
void check_finite(const int16_t*, int, int, int) {}

#ifdef CTDN_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA: ") + what + " failed: " + cudaGetErrorString(e));
}

// Device memory that only grows.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t size = 0;
  void* get(size_t bytes) {
    if (bytes > size) {
      if (ptr) cudaFree(ptr);
      ptr = nullptr;
      size = 0;
      cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc");
      size = bytes;
    }
    return ptr;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// Page-locked host memory that only grows: the caller's (pageable) arrays are staged through it so the
// copies to and from the GPU are DMA transfers at full bus speed.
struct PinnedBuffer {
  void* ptr = nullptr;
  size_t size = 0;
  void* get(size_t bytes) {
    if (bytes > size) {
      if (ptr) cudaFreeHost(ptr);
      ptr = nullptr;
      size = 0;
      cuda_check(cudaMallocHost(&ptr, bytes), "cudaMallocHost");
      size = bytes;
    }
    return ptr;
  }
  ~PinnedBuffer() {
    if (ptr) cudaFreeHost(ptr);
  }
};
#endif

}  // namespace

struct Runtime::Impl {
  std::string path;
  Options options;
  Sidecar sc;
  std::unique_ptr<Engine> engine;
  int max_batch = 1;
  std::mutex mu;
  std::vector<float> hx, hy, hdose;  // host scratch: padded batches, network in/out
#ifdef CTDN_WITH_CUDA
  cudaStream_t stream = nullptr;
  DeviceBuffer dx, dy, ddose, din, dout, dbad;
  PinnedBuffer pin_in, pin_out, pin_dose;
#endif

  ~Impl() {
    engine.reset();  // before the stream and buffers it may use
#ifdef CTDN_WITH_CUDA
    if (stream) cudaStreamDestroy(stream);
#endif
  }

  [[noreturn]] void out_of_range(const char* what, int size, int lo, int hi) const {
    throw Error(path + ": " + what + " " + std::to_string(size) + " is outside the range this " + sc.kind +
                " file was built for (" + std::to_string(lo) + ".." + std::to_string(hi) +
                ", its sidecar's shapes); rebuild it for these sizes: " + sc.rebuild);
  }

  // The padded size the network runs at for `size` pixels: the next multiple, at least the minimum.
  int padded(int size, int lo, int hi, const char* what) const {
    int p = hu::padded_size(std::max(size, lo), sc.multiple);
    if (p > hi) out_of_range(what, p, lo, hi);
    return p;
  }

  // The border margin for an h x w slice (ctdn.Denoiser._margin): hu::kMargin, or 0 where the engine's
  // size profile cannot take the slice with it (the engine then gets what it was built for: the slice
  // padded at the bottom and right only).
  int margin_for(int h, int w) const {
    const int m = hu::kMargin;
    const bool fits = hu::padded_size(std::max(h + 2 * m, sc.height_min), sc.multiple) <= sc.height_max &&
                      hu::padded_size(std::max(w + 2 * m, sc.width_min), sc.multiple) <= sc.width_max;
    return fits ? m : 0;
  }

  // The network returned NaN/inf for slices [first, first + b): refused before they are written.
  [[noreturn]] void nonfinite(long long bad, int first, int b) const {
    const std::string slices = b == 1 ? "slice " + std::to_string(first)
                                      : "slices " + std::to_string(first) + ".." + std::to_string(first + b - 1);
    throw ModelError("model '" + sc.model_name + "' (" + path + ") on the " + sc.kind + " runtime returned " +
                     std::to_string(bad) + " NaN/inf values for finite input (" + slices +
                     "): its weights or the engine are broken; nothing was written for these slices");
  }

  // Slices per network call for a chunk of n: the batch minimum pads it (by repeating the last slice).
  int batch_for(int n) const { return std::max(n, sc.batch_min); }

  void run_chunk_host(const float* x, const float* dose, float* y, int b, int h, int w) {
    const int bb = batch_for(b);
    const size_t plane = static_cast<size_t>(h) * w;
    if (!engine->on_cuda()) {
      if (bb == b) {
        engine->run(x, dose, y, b, h, w);
        return;
      }
      hx.resize(bb * plane);
      hy.resize(bb * plane);
      hdose.resize(bb);
      std::memcpy(hx.data(), x, b * plane * sizeof(float));
      for (int i = b; i < bb; ++i) std::memcpy(hx.data() + i * plane, x + (b - 1) * plane, plane * sizeof(float));
      for (int i = 0; i < bb; ++i) hdose[i] = dose[std::min(i, b - 1)];
      engine->run(hx.data(), hdose.data(), hy.data(), bb, h, w);
      std::memcpy(y, hy.data(), b * plane * sizeof(float));
      return;
    }
#ifdef CTDN_WITH_CUDA
    float* gx = static_cast<float*>(dx.get(bb * plane * sizeof(float)));
    float* gy = static_cast<float*>(dy.get(bb * plane * sizeof(float)));
    float* gd = device_doses(dose, b, bb);
    const size_t bytes = b * plane * sizeof(float);
    upload(gx, x, bytes);
    repeat_last(gx, b, bb, plane * sizeof(float));
    run_on_device(gx, gd, gy, bb, h, w);
    download(y, gy, bytes);
#else
    no_cuda();
#endif
  }

  // Slices [first, first + b) through pre -> engine -> post; the slice sits at (margin, margin) of the
  // hp x wp plane the network sees.
  template <typename T>
  void denoise_chunk(const T* in, T* out, int first, int b, int h, int w, int hp, int wp, int margin,
                     const float* dose) {
    const int bb = batch_for(b);
    const size_t plane = static_cast<size_t>(hp) * wp;
    if (!engine->on_cuda()) {
      hx.resize(bb * plane);
      hy.resize(bb * plane);
      hdose.resize(bb);
      hu::pre(in, hx.data(), b, h, w, hp, wp, margin, sc.hu_lo, sc.hu_hi);
      for (int i = b; i < bb; ++i) std::memcpy(hx.data() + i * plane, hx.data() + (b - 1) * plane, plane * sizeof(float));
      for (int i = 0; i < bb; ++i) hdose[i] = dose[std::min(i, b - 1)];
      engine->run(hx.data(), hdose.data(), hy.data(), bb, hp, wp);
      const long long bad = hu::count_nonfinite(hy.data(), b, h, w, hp, wp, margin);
      if (bad) nonfinite(bad, first, b);
      hu::post(hy.data(), in, out, b, h, w, hp, wp, margin, sc.hu_lo, sc.hu_hi);
      return;
    }
#ifdef CTDN_WITH_CUDA
    const size_t bytes = static_cast<size_t>(b) * h * w * sizeof(T);
    T* gin = static_cast<T*>(din.get(bytes));
    T* gout = static_cast<T*>(dout.get(bytes));
    float* gx = static_cast<float*>(dx.get(bb * plane * sizeof(float)));
    float* gy = static_cast<float*>(dy.get(bb * plane * sizeof(float)));
    float* gd = device_doses(dose, b, bb);
    auto* gbad = static_cast<unsigned long long*>(dbad.get(sizeof(unsigned long long)));
    upload(gin, in, bytes);
    cuda::pre(gin, gx, b, h, w, hp, wp, margin, sc.hu_lo, sc.hu_hi, stream);
    repeat_last(gx, b, bb, plane * sizeof(float));
    run_on_device(gx, gd, gy, bb, hp, wp);
    cuda_check(cudaMemsetAsync(gbad, 0, sizeof(unsigned long long), stream), "clear the NaN/inf count");
    cuda::post(gy, gin, gout, b, h, w, hp, wp, margin, sc.hu_lo, sc.hu_hi, gbad, stream);
    // The output and the count reach the host together; the output is only handed on if the count is 0.
    const size_t at = (bytes + 7) / 8 * 8;  // the count after the output, aligned
    void* pin = pin_out.get(at + sizeof(unsigned long long));
    auto* hbad = reinterpret_cast<unsigned long long*>(static_cast<char*>(pin) + at);
    cuda_check(cudaMemcpyAsync(pin, gout, bytes, cudaMemcpyDeviceToHost, stream), "copy from the GPU");
    cuda_check(cudaMemcpyAsync(hbad, gbad, sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream),
               "copy the NaN/inf count");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    if (*hbad) nonfinite(static_cast<long long>(*hbad), first, b);
    std::memcpy(out, pin, bytes);
#else
    no_cuda();
#endif
  }

#ifdef CTDN_WITH_CUDA
  float* device_doses(const float* dose, int b, int bb) {
    float* hd = static_cast<float*>(pin_dose.get(bb * sizeof(float)));
    for (int i = 0; i < bb; ++i) hd[i] = dose[std::min(i, b - 1)];
    float* gd = static_cast<float*>(ddose.get(bb * sizeof(float)));
    cuda_check(cudaMemcpyAsync(gd, hd, bb * sizeof(float), cudaMemcpyHostToDevice, stream), "copy the doses");
    return gd;
  }

  // Host -> device through the pinned staging buffer, on our stream.
  void upload(void* dst, const void* src, size_t bytes) {
    void* pin = pin_in.get(bytes);
    std::memcpy(pin, src, bytes);
    cuda_check(cudaMemcpyAsync(dst, pin, bytes, cudaMemcpyHostToDevice, stream), "copy to the GPU");
  }

  // Device -> host through the pinned staging buffer; waits for everything queued on our stream.
  void download(void* dst, const void* src, size_t bytes) {
    void* pin = pin_out.get(bytes);
    cuda_check(cudaMemcpyAsync(pin, src, bytes, cudaMemcpyDeviceToHost, stream), "copy from the GPU");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    std::memcpy(dst, pin, bytes);
  }

  void repeat_last(float* g, int b, int bb, size_t plane_bytes) {
    char* base = reinterpret_cast<char*>(g);
    for (int i = b; i < bb; ++i)
      cuda_check(cudaMemcpyAsync(base + i * plane_bytes, base + (b - 1) * plane_bytes, plane_bytes,
                                 cudaMemcpyDeviceToDevice, stream),
                 "pad the batch");
  }

  // Engine::run is synchronous for the host (it returns when y is written), on its own stream: ours is
  // drained first so x and dose are in place.
  void run_on_device(const float* gx, const float* gd, float* gy, int bb, int h, int w) {
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    engine->run(gx, gd, gy, bb, h, w);
  }
#else
  [[noreturn]] void no_cuda() const {
    throw Error(path + ": the engine runs on CUDA but this runtime was built without CUDA (nvcc was not "
                "found); rebuild the runtime with CUDA (python -m ctdn.runtime.build --cuda)");
  }
#endif

  template <typename T>
  void denoise(const T* in, T* out, int n, int h, int w, const float* dose) {
    if (!in || !out) throw Error("denoise: null input or output pointer");
    if (n < 1 || h < 1 || w < 1)
      throw Error("denoise: n, h and w must be >= 1, got " + std::to_string(n) + ", " + std::to_string(h) +
                  ", " + std::to_string(w));
    check_doses(dose, n);
    check_finite(in, n, h, w);
    const int margin = margin_for(h, w);
    const int hp = padded(h + 2 * margin, sc.height_min, sc.height_max, "padded height");
    const int wp = padded(w + 2 * margin, sc.width_min, sc.width_max, "padded width");
    const size_t plane = static_cast<size_t>(h) * w;
    std::lock_guard<std::mutex> lock(mu);
    select_device();
    for (int i = 0; i < n; i += max_batch) {
      int b = std::min(max_batch, n - i);
      denoise_chunk(in + i * plane, out + i * plane, i, b, h, w, hp, wp, margin, dose + i);
    }
  }

  void infer(const float* x, const float* dose, float* y, int n, int h, int w) {
    if (!x || !y) throw Error("infer: null x or y pointer");
    if (n < 1 || h < 1 || w < 1)
      throw Error("infer: n, h and w must be >= 1, got " + std::to_string(n) + ", " + std::to_string(h) + ", " +
                  std::to_string(w));
    if (h % sc.multiple || w % sc.multiple)
      throw Error("infer: h and w must be multiples of " + std::to_string(sc.multiple) + ", got " +
                  std::to_string(h) + "x" + std::to_string(w) + " (denoise() pads any size)");
    if (h < sc.height_min || h > sc.height_max) out_of_range("height", h, sc.height_min, sc.height_max);
    if (w < sc.width_min || w > sc.width_max) out_of_range("width", w, sc.width_min, sc.width_max);
    check_doses(dose, n);
    const size_t plane = static_cast<size_t>(h) * w;
    std::lock_guard<std::mutex> lock(mu);
    select_device();
    for (int i = 0; i < n; i += max_batch) {
      int b = std::min(max_batch, n - i);
      run_chunk_host(x + i * plane, dose + i, y + i * plane, b, h, w);
    }
  }

  void select_device() {
#ifdef CTDN_WITH_CUDA
    if (engine->on_cuda()) {
      cuda_check(cudaSetDevice(options.device), "cudaSetDevice");  // per host thread
      if (!stream) cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    }
#endif
  }
};

Runtime::Runtime(const std::string& path, Options options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.options = options;
  m.sc = Sidecar::read(path + ".json");
  const std::string by_name = kind_of(path);
  const std::string kind = by_name.empty() ? m.sc.kind : by_name;
  if (kind == "aoti") {
    m.engine = open_aoti(path, m.sc, options);
  } else if (kind == "tensorrt") {
    m.engine = open_tensorrt(path, m.sc, options);
  } else {
    throw Error(path + ": kind is '" + m.sc.kind +
                "' in its sidecar but this runtime opens 'aoti' and 'tensorrt' files; rebuild it on this machine: " +
                m.sc.rebuild);
  }
  if (options.max_batch < 0) throw Error("max_batch must be >= 0 (0: the sidecar's), got " + std::to_string(options.max_batch));
  if (options.max_batch > m.sc.batch_max)
    m.out_of_range("max_batch", options.max_batch, m.sc.batch_min, m.sc.batch_max);
  m.max_batch = options.max_batch ? options.max_batch : m.sc.batch_max;
#ifdef CTDN_WITH_CUDA
  if (m.engine->on_cuda()) m.select_device();
#endif
}

Runtime::~Runtime() = default;

const Sidecar& Runtime::sidecar() const { return impl_->sc; }

void Runtime::infer(const float* x, const float* dose, float* y, int n, int h, int w) {
  impl_->infer(x, dose, y, n, h, w);
}

void Runtime::denoise(const int16_t* in, int16_t* out, int n, int h, int w, const float* dose) {
  impl_->denoise(in, out, n, h, w, dose);
}

void Runtime::denoise(const float* in, float* out, int n, int h, int w, const float* dose) {
  impl_->denoise(in, out, n, h, w, dose);
}

#ifndef CTDN_WITH_AOTI
std::unique_ptr<Engine> open_aoti(const std::string& path, const Sidecar&, const Options&) {
  throw Error(path + ": this runtime was built without the AOTInductor kind (libtorch was not found when it "
              "was built)");
}
#endif

// open_tensorrt: csrc/src/engine_trt.cpp (a stub that says how to rebuild without CTDN_WITH_TENSORRT).

std::vector<std::string> build_features() {
  std::vector<std::string> f;
#ifdef CTDN_WITH_AOTI
  f.push_back("aoti");
#endif
#ifdef CTDN_WITH_CUDA
  f.push_back("cuda");
#endif
#ifdef CTDN_WITH_TENSORRT
  f.push_back("tensorrt");
#endif
  return f;
}

}  // namespace ctdn

// Test harness for the HU pre/post kernels: a C API over host arrays for ctypes
// (tests/test_csrc_cuda.py). Built with nvcc as one shared library together with csrc/src/hu_cuda.cu,
// which is included here so the host copies of its per-pixel functions (ctdn::cuda::detail) can run
// without a GPU: mode 0 launches the real kernels (device round trip), mode 1 runs the same per-pixel
// arithmetic in a host loop (what this file can check on a machine without a GPU).
//
// Every function returns 0, or -1 with a message in err (errlen bytes).

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "../src/hu_cuda.cu"

namespace {

using ctdn::cuda::detail::post_pixel;
using ctdn::cuda::detail::PostPixel;
using ctdn::cuda::detail::pre_pixel;
using ctdn::cuda::detail::use_reflect;
using ctdn::cuda::detail::window_of;
using ctdn::cuda::detail::write_pixel;

void set_err(char* err, int errlen, const std::string& msg) {
  if (err && errlen > 0) std::snprintf(err, static_cast<size_t>(errlen), "%s", msg.c_str());
}

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw ctdn::Error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Device buffer freed on scope exit.
struct Buf {
  void* p = nullptr;
  explicit Buf(size_t bytes) { ok(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc"); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

template <typename T>
void pre_host(const T* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  ctdn::cuda::detail::check_args("pre", hu, x, x, n, h, w, hp, wp, margin, lo, hi);
  const bool reflect = use_reflect(h, w, hp, wp);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < hp; ++r)
      for (int64_t c = 0; c < wp; ++c)
        x[(i * hp + r) * wp + c] = pre_pixel(hu, i, r, c, h, w, margin, reflect, lo, hi);
}

template <typename T>
void post_host(const float* y, const T* hu, T* out, int n, int h, int w, int hp, int wp, int margin, float lo,
               float hi, unsigned long long* nonfinite) {
  ctdn::cuda::detail::check_args("post", y, hu, out, n, h, w, hp, wp, margin, lo, hi);
  const auto win = window_of(lo, hi);
  *nonfinite = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < h; ++r)
      for (int64_t c = 0; c < w; ++c) {
        const PostPixel p = post_pixel(y, hu, i, r, c, h, w, hp, wp, margin, win);
        write_pixel(out, hu, (i * h + r) * w + c, p);
        *nonfinite += p.nonfinite;
      }
}

template <typename T>
void pre_device(const T* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  const size_t in_bytes = sizeof(T) * n * h * w, out_bytes = sizeof(float) * n * hp * wp;
  Buf d_hu(in_bytes), d_x(out_bytes);
  cudaStream_t s;
  ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    ok(cudaMemcpyAsync(d_hu.p, hu, in_bytes, cudaMemcpyHostToDevice, s), "copy in");
    ctdn::cuda::pre(static_cast<const T*>(d_hu.p), static_cast<float*>(d_x.p), n, h, w, hp, wp, margin, lo, hi,
                    s);
    ok(cudaMemcpyAsync(x, d_x.p, out_bytes, cudaMemcpyDeviceToHost, s), "copy out");
    ok(cudaStreamSynchronize(s), "pre kernel");
  } catch (...) {
    cudaStreamDestroy(s);
    throw;
  }
  cudaStreamDestroy(s);
}

template <typename T>
void post_device(const float* y, const T* hu, T* out, int n, int h, int w, int hp, int wp, int margin, float lo,
                 float hi, unsigned long long* nonfinite) {
  const size_t y_bytes = sizeof(float) * n * hp * wp, hu_bytes = sizeof(T) * n * h * w;
  Buf d_y(y_bytes), d_hu(hu_bytes), d_out(hu_bytes), d_bad(sizeof(unsigned long long));
  cudaStream_t s;
  ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    ok(cudaMemcpyAsync(d_y.p, y, y_bytes, cudaMemcpyHostToDevice, s), "copy y in");
    ok(cudaMemcpyAsync(d_hu.p, hu, hu_bytes, cudaMemcpyHostToDevice, s), "copy hu in");
    ok(cudaMemsetAsync(d_bad.p, 0, sizeof(unsigned long long), s), "clear the count");
    ctdn::cuda::post(static_cast<const float*>(d_y.p), static_cast<const T*>(d_hu.p), static_cast<T*>(d_out.p), n,
                     h, w, hp, wp, margin, lo, hi, static_cast<unsigned long long*>(d_bad.p), s);
    ok(cudaMemcpyAsync(out, d_out.p, hu_bytes, cudaMemcpyDeviceToHost, s), "copy out");
    ok(cudaMemcpyAsync(nonfinite, d_bad.p, sizeof(unsigned long long), cudaMemcpyDeviceToHost, s), "copy count");
    ok(cudaStreamSynchronize(s), "post kernel");
  } catch (...) {
    cudaStreamDestroy(s);
    throw;
  }
  cudaStreamDestroy(s);
}

template <typename F>
int guarded(char* err, int errlen, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
  } catch (...) {
    set_err(err, errlen, "unknown C++ exception");
  }
  return -1;
}

}  // namespace

extern "C" {

// Number of CUDA devices (0 when there is no driver or no GPU); err says why when 0.
int ctdn_test_device_count(char* err, int errlen) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    set_err(err, errlen, std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e));
    cudaGetLastError();
    return 0;
  }
  return n;
}

// dtype 0: int16 HU, 1: float32 HU. mode 0: CUDA kernels, 1: the same per-pixel code on the host.
// margin: the slice's offset in x and y (0: padded at the bottom/right only).
int ctdn_test_pre(int dtype, int mode, const void* hu, float* x, int n, int h, int w, int hp, int wp, int margin,
                  float lo, float hi, char* err, int errlen) {
  return guarded(err, errlen, [&] {
    if (dtype == 0) {
      auto p = static_cast<const int16_t*>(hu);
      mode ? pre_host(p, x, n, h, w, hp, wp, margin, lo, hi) : pre_device(p, x, n, h, w, hp, wp, margin, lo, hi);
    } else {
      auto p = static_cast<const float*>(hu);
      mode ? pre_host(p, x, n, h, w, hp, wp, margin, lo, hi) : pre_device(p, x, n, h, w, hp, wp, margin, lo, hi);
    }
  });
}

// nonfinite: set to the number of NaN/inf network values the crop read.
int ctdn_test_post(int dtype, int mode, const float* y, const void* hu, void* out, int n, int h, int w, int hp,
                   int wp, int margin, float lo, float hi, unsigned long long* nonfinite, char* err, int errlen) {
  return guarded(err, errlen, [&] {
    if (dtype == 0) {
      auto p = static_cast<const int16_t*>(hu);
      auto o = static_cast<int16_t*>(out);
      mode ? post_host(y, p, o, n, h, w, hp, wp, margin, lo, hi, nonfinite)
           : post_device(y, p, o, n, h, w, hp, wp, margin, lo, hi, nonfinite);
    } else {
      auto p = static_cast<const float*>(hu);
      auto o = static_cast<float*>(out);
      mode ? post_host(y, p, o, n, h, w, hp, wp, margin, lo, hi, nonfinite)
           : post_device(y, p, o, n, h, w, hp, wp, margin, lo, hi, nonfinite);
    }
  });
}

// Argument checking of the public entry points (no GPU needed: they throw before launching).
int ctdn_test_pre_checks(int n, int h, int w, int hp, int wp, float lo, float hi, char* err, int errlen) {
  static int16_t dummy_in[1];
  static float dummy_out[1];
  return guarded(err, errlen, [&] { ctdn::cuda::pre(dummy_in, dummy_out, n, h, w, hp, wp, 0, lo, hi, nullptr); });
}

}  // extern "C"

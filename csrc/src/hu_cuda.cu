// HU window pre/post-processing kernels (declared in ctdn/hu_cuda.hpp). The arithmetic is
// ctdn.Denoiser's, step for step in float32, so a CUDA runtime and the Python reference agree to the
// last bit where the summation order allows (see post_pixel):
//   pre:  HU -> clip to [lo, hi] -> unit = 2 (hu - lo) / (hi - lo) - 1, with a margin of edge pixels on
//         every side then padded bottom/right (or, margin 0, padded bottom/right only)
//   post: crop, unit -> HU, blend with the input outside the window (3x3 mean of the input clipped at
//         lo - 150), padding and seam weight 1 copied from the input, int16 rint + saturate
//
// One thread per output pixel: both kernels are memory-bound (pre reads one HU value and writes one
// float; post reads one network value and a 3x3 neighbourhood whose other 8 reads hit L1/L2 because
// neighbouring threads read the same rows, and writes one value; the padding test reads the same 3x3). No shared-memory tiling: it would
// save no DRAM traffic, and the pointwise work is a handful of flops per byte moved.
//
// Products and sums use __fmul_rn/__fadd_rn so nvcc cannot contract them into FMAs (which round once
// instead of twice and would move int16 results across .5 boundaries against the reference).

#include <cuda_runtime_api.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <string>

#include "ctdn/hu_cuda.hpp"
#include "ctdn/runtime.hpp"

namespace ctdn {
namespace cuda {
namespace detail {

#ifdef __CUDA_ARCH__
#define CTDN_MUL(a, b) __fmul_rn((a), (b))
#define CTDN_ADD(a, b) __fadd_rn((a), (b))
#define CTDN_SUB(a, b) __fsub_rn((a), (b))
#define CTDN_DIV(a, b) __fdiv_rn((a), (b))
#else  // the host copies (used by csrc/tests/hu_cuda_capi.cu to check the arithmetic without a GPU)
#define CTDN_MUL(a, b) ((a) * (b))
#define CTDN_ADD(a, b) ((a) + (b))
#define CTDN_SUB(a, b) ((a) - (b))
#define CTDN_DIV(a, b) ((a) / (b))
#endif

constexpr float kSeamHigh = 50.f;  // ctdn.inference.SEAM_HIGH_HU
constexpr float kSeamLowA = 100.f, kSeamLowB = 150.f;  // ctdn.inference.SEAM_LOW_HU

__host__ __device__ inline float clampf(float v, float lo, float hi) {
  // numpy's clip: minimum(maximum(v, lo), hi)
  return v < lo ? lo : (v > hi ? hi : v);
}

__host__ __device__ inline float to_float(float v) { return v; }
__host__ __device__ inline float to_float(int16_t v) { return static_cast<float>(v); }

__host__ __device__ inline void store(float* out, float v) { *out = v; }
__host__ __device__ inline void store(int16_t* out, float v) {
  // np.clip(np.rint(v), -32768, 32767).astype(int16): rint rounds half to even.
  float r = rintf(v);
  *out = static_cast<int16_t>(clampf(r, -32768.f, 32767.f));
}

// Source index of padded index i for a size-n axis: with a margin, the nearest edge pixel of i - margin;
// without, reflect (no edge repeat) or replicate past the far edge.
__host__ __device__ inline int64_t pad_index(int64_t i, int64_t n, int margin, bool reflect) {
  if (margin > 0) {
    const int64_t j = i - margin;
    return j < 0 ? 0 : (j >= n ? n - 1 : j);
  }
  if (i < n) return i;
  return reflect ? 2 * (n - 1) - i : n - 1;
}

// Without a margin, reflect only when both pads are shorter than their axes (pad_to_multiple).
inline bool use_reflect(int h, int w, int hp, int wp) { return hp - h < h && wp - w < w; }

// The window's constants, each rounded to float32 once as numpy rounds a Python float against a float32
// array (computed on the host, passed to the kernels by value).
struct Window {
  float lo, hi;
  float deep;  // lo - SEAM_LOW_HU[1]: the smoothing's floor and the deep-padding level
  float top;   // ctdn.inference._SMOOTH_MAX: keeps the 3x3 sum finite
};

inline Window window_of(float lo, float hi) {
  return {lo, hi, static_cast<float>(static_cast<double>(lo) - static_cast<double>(kSeamLowB)),
          static_cast<float>(static_cast<double>(FLT_MAX) / 9.0)};
}

// x[i, 0, r, c] for padded pixel (r, c) of slice i.
template <typename T>
__host__ __device__ inline float pre_pixel(const T* hu, int64_t i, int64_t r, int64_t c, int h, int w,
                                           int margin, bool reflect, float lo, float hi) {
  const int64_t sr = pad_index(r, h, margin, reflect), sc = pad_index(c, w, margin, reflect);
  const float v = clampf(to_float(hu[(i * h + sr) * w + sc]), lo, hi);
  // 2.0 * (clip(hu) - lo) / (hi - lo) - 1.0, left to right as numpy evaluates it.
  return CTDN_SUB(CTDN_DIV(CTDN_MUL(2.f, CTDN_SUB(v, lo)), CTDN_SUB(hi, lo)), 1.f);
}

// ctdn.inference.passthrough_mask for pixel (r, c) of slice s0 with value v < lo: at least half of its
// in-slice neighbours equal to v, or v at or below `deep` with at least half of them there too.
template <typename T>
__host__ __device__ inline bool is_padding(const T* s0, int64_t r, int64_t c, int h, int w, float v, float deep) {
  int same = 0, low = 0, real = 0;
  for (int dr = -1; dr <= 1; ++dr) {
    if (r + dr < 0 || r + dr >= h) continue;
    for (int dc = -1; dc <= 1; ++dc) {
      if ((dr == 0 && dc == 0) || c + dc < 0 || c + dc >= w) continue;
      const float nb = to_float(s0[(r + dr) * w + c + dc]);
      ++real;
      same += nb == v;
      low += nb <= deep;
    }
  }
  return 2 * same >= real || (v <= deep && 2 * low >= real);
}

// One output pixel: its HU (ignored where exact), whether it is the input bit-exactly, and whether the
// network value it read is NaN/inf.
struct PostPixel {
  float value;
  bool exact;
  bool nonfinite;
};

// Output for pixel (r, c) of slice i (unpadded), from the padded network output y.
template <typename T>
__host__ __device__ inline PostPixel post_pixel(const float* y, const T* hu, int64_t i, int64_t r, int64_t c,
                                                int h, int w, int hp, int wp, int margin, Window win) {
  const float lo = win.lo, hi = win.hi;
  // 3x3 mean with replicate padding of the input clipped to [deep, top], summed row by row then divided
  // by 9: the order of torch's CPU avg_pool2d, which ctdn.inference.passthrough_weight uses.
  const T* s0 = hu + i * h * w;
  float sum = 0.f;
  for (int dr = -1; dr <= 1; ++dr) {
    const int64_t rr = r + dr < 0 ? 0 : (r + dr >= h ? h - 1 : r + dr);
    for (int dc = -1; dc <= 1; ++dc) {
      const int64_t cc = c + dc < 0 ? 0 : (c + dc >= w ? w - 1 : c + dc);
      sum = CTDN_ADD(sum, clampf(to_float(s0[rr * w + cc]), win.deep, win.top));
    }
  }
  const float s = CTDN_DIV(sum, 9.f);
  const float w_hi = clampf(CTDN_DIV(CTDN_SUB(s, CTDN_SUB(hi, kSeamHigh)), kSeamHigh), 0.f, 1.f);
  const float w_lo =
      clampf(CTDN_DIV(CTDN_SUB(CTDN_SUB(lo, kSeamLowA), s), kSeamLowB - kSeamLowA), 0.f, 1.f);
  const float wgt = w_hi > w_lo ? w_hi : w_lo;
  const float x = to_float(s0[r * w + c]);
  const float yv = y[(i * hp + r + margin) * wp + c + margin];
  PostPixel p;
  p.nonfinite = !isfinite(yv);
  p.exact = wgt == 1.f || (x < lo && is_padding(s0, r, c, h, w, x, win.deep));
  // unit_to_hu: (y + 1.0) * 0.5 * (hi - lo) + lo
  const float yhu = CTDN_ADD(CTDN_MUL(CTDN_MUL(CTDN_ADD(yv, 1.f), 0.5f), CTDN_SUB(hi, lo)), lo);
  // y + wgt * (x - y)
  p.value = CTDN_ADD(yhu, CTDN_MUL(wgt, CTDN_SUB(x, yhu)));
  return p;
}

// Writes pixel k of out from its PostPixel: a copy of the input where exact.
template <typename T>
__host__ __device__ inline void write_pixel(T* out, const T* hu, int64_t k, const PostPixel& p) {
  if (p.exact)
    out[k] = hu[k];
  else
    store(out + k, p.value);
}

template <typename T>
__global__ void pre_kernel(const T* hu, float* x, int64_t total, int h, int w, int hp, int wp, int margin,
                           bool reflect, float lo, float hi) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = k % wp, r = (k / wp) % hp, i = k / (static_cast<int64_t>(wp) * hp);
    x[k] = pre_pixel(hu, i, r, c, h, w, margin, reflect, lo, hi);
  }
}

template <typename T>
__global__ void post_kernel(const float* y, const T* hu, T* out, int64_t total, int h, int w, int hp, int wp,
                            int margin, Window win, unsigned long long* nonfinite) {
  unsigned long long bad = 0;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = k % w, r = (k / w) % h, i = k / (static_cast<int64_t>(w) * h);
    const PostPixel p = post_pixel(y, hu, i, r, c, h, w, hp, wp, margin, win);
    write_pixel(out, hu, k, p);
    bad += p.nonfinite;
  }
  if (bad && nonfinite) atomicAdd(nonfinite, bad);  // rare: only a broken network gets here
}

inline void check_args(const char* what, const void* a, const void* b, const void* c, int n, int h, int w,
                       int hp, int wp, int margin, float lo, float hi) {
  std::string bad;
  if (n < 0 || h < 1 || w < 1 || margin < 0) {
    bad = "n >= 0, h, w >= 1 and margin >= 0 are needed, got n=" + std::to_string(n) + " h=" + std::to_string(h) +
          " w=" + std::to_string(w) + " margin=" + std::to_string(margin);
  } else if (hp < h + margin || wp < w + margin) {
    bad = "the padded size " + std::to_string(hp) + "x" + std::to_string(wp) + " is smaller than the slice " +
          std::to_string(h) + "x" + std::to_string(w) + (margin ? " after its margin " + std::to_string(margin) : "");
  } else if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) {
    bad = "the HU window must be finite with lo < hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) +
          "]";
  } else if (n > 0 && (!a || !b || !c)) {
    bad = "a null pointer was passed";
  }
  if (!bad.empty()) throw Error(std::string("ctdn::cuda::") + what + ": " + bad);
}

inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw Error(std::string("ctdn::cuda::") + what + ": kernel launch failed: " + cudaGetErrorName(err) + " (" +
                cudaGetErrorString(err) + ")");
  }
}

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t total) {
  // Grid-stride loops: any grid size is correct; 2^20 blocks cover 268 M pixels per sweep.
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (1 << 20) ? b : (1 << 20));
}

template <typename T>
void pre_impl(const T* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi,
              cudaStream_t s) {
  check_args("pre", hu, x, x, n, h, w, hp, wp, margin, lo, hi);
  const int64_t total = static_cast<int64_t>(n) * hp * wp;
  if (total == 0) return;
  pre_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(hu, x, total, h, w, hp, wp, margin,
                                                       use_reflect(h, w, hp, wp), lo, hi);
  check_launch("pre");
}

template <typename T>
void post_impl(const float* y, const T* hu, T* out, int n, int h, int w, int hp, int wp, int margin, float lo,
               float hi, unsigned long long* nonfinite, cudaStream_t s) {
  check_args("post", y, hu, out, n, h, w, hp, wp, margin, lo, hi);
  const int64_t total = static_cast<int64_t>(n) * h * w;
  if (total == 0) return;
  post_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(y, hu, out, total, h, w, hp, wp, margin,
                                                        window_of(lo, hi), nonfinite);
  check_launch("post");
}

}  // namespace detail

void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi,
         cudaStream_t stream) {
  detail::pre_impl(hu, x, n, h, w, hp, wp, margin, lo, hi, stream);
}

void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi,
         cudaStream_t stream) {
  detail::pre_impl(hu, x, n, h, w, hp, wp, margin, lo, hi, stream);
}

void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi, unsigned long long* nonfinite, cudaStream_t stream) {
  detail::post_impl(y, hu, out, n, h, w, hp, wp, margin, lo, hi, nonfinite, stream);
}

void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi, unsigned long long* nonfinite, cudaStream_t stream) {
  detail::post_impl(y, hu, out, n, h, w, hp, wp, margin, lo, hi, nonfinite, stream);
}

}  // namespace cuda
}  // namespace ctdn

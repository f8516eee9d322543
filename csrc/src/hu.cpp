// HU pre/post on the CPU. Every float operation is written in the order numpy/torch do it in
// ctdn.inference (float32 throughout, no fused multiply-add: built with -ffp-contract=off), so the
// results match the Python path to the last bit or close to it.

#include "ctdn/hu.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ctdn/runtime.hpp"

namespace ctdn {
namespace hu {

namespace {

void check(int n, int h, int w, int hp, int wp, float lo, float hi) {
  if (n < 1 || h < 1 || w < 1 || hp < h || wp < w)
    throw Error("HU pre/post: bad sizes n=" + std::to_string(n) + " h=" + std::to_string(h) + " w=" +
                std::to_string(w) + " padded to " + std::to_string(hp) + "x" + std::to_string(wp));
  if (!(lo < hi)) throw Error("HU pre/post: the window must have low < high");
}

// Source index of padded index i in [0, size + pad): reflect or replicate at the far edge.
inline int source(int i, int size, bool reflect) {
  if (i < size) return i;
  return reflect ? 2 * (size - 1) - i : size - 1;
}

inline float value(int16_t v) { return static_cast<float>(v); }
inline float value(float v) { return v; }

inline void store(float v, float* o) { *o = v; }
inline void store(float v, int16_t* o) {
  float r = std::nearbyint(v);  // round half to even (the default rounding mode), like np.rint
  *o = static_cast<int16_t>(std::min(32767.f, std::max(-32768.f, r)));
}

template <typename T>
void pre_impl(const T* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi) {
  check(n, h, w, hp, wp, lo, hi);
  const bool reflect = (hp - h) < h && (wp - w) < w;
  const float span = static_cast<float>(static_cast<double>(hi) - static_cast<double>(lo));
  std::vector<int> cols(wp);
  for (int c = 0; c < wp; ++c) cols[c] = source(c, w, reflect);
  for (int i = 0; i < n; ++i) {
    const T* src = hu + static_cast<size_t>(i) * h * w;
    float* dst = x + static_cast<size_t>(i) * hp * wp;
    for (int r = 0; r < hp; ++r) {
      const T* row = src + static_cast<size_t>(source(r, h, reflect)) * w;
      float* out = dst + static_cast<size_t>(r) * wp;
      for (int c = 0; c < wp; ++c) {
        float v = std::min(std::max(value(row[cols[c]]), lo), hi);
        out[c] = 2.0f * (v - lo) / span - 1.0f;
      }
    }
  }
}

template <typename T>
void post_impl(const float* y, const T* hu, T* out, int n, int h, int w, int hp, int wp, float lo, float hi) {
  check(n, h, w, hp, wp, lo, hi);
  const float span = static_cast<float>(static_cast<double>(hi) - static_cast<double>(lo));
  const float seam_hi = static_cast<float>(static_cast<double>(hi) - 50.0);   // hi - SEAM_HIGH_HU
  const float seam_lo = static_cast<float>(static_cast<double>(lo) - 100.0);  // lo - SEAM_LOW_HU[0]
  std::vector<float> rows(3 * static_cast<size_t>(w));  // the input rows r-1, r, r+1 as float
  for (int i = 0; i < n; ++i) {
    const T* src = hu + static_cast<size_t>(i) * h * w;
    const float* net = y + static_cast<size_t>(i) * hp * wp;
    T* dst = out + static_cast<size_t>(i) * h * w;
    for (int r = 0; r < h; ++r) {
      const int rr[3] = {std::max(r - 1, 0), r, std::min(r + 1, h - 1)};
      for (int k = 0; k < 3; ++k)
        for (int c = 0; c < w; ++c) rows[k * w + c] = value(src[static_cast<size_t>(rr[k]) * w + c]);
      for (int c = 0; c < w; ++c) {
        const int cc[3] = {std::max(c - 1, 0), c, std::min(c + 1, w - 1)};
        // torch's avg_pool2d on the CPU: a float sum over the window row by row, then / 9.
        float sum = 0.f;
        for (int k = 0; k < 3; ++k)
          for (int j = 0; j < 3; ++j) sum += rows[k * w + cc[j]];
        const float s = sum / 9.0f;
        const float w_hi = std::min(std::max((s - seam_hi) / 50.0f, 0.f), 1.f);
        const float w_lo = std::min(std::max((seam_lo - s) / 50.0f, 0.f), 1.f);
        const float wgt = std::max(w_hi, w_lo);
        const float yhu = (net[static_cast<size_t>(r) * wp + c] + 1.0f) * 0.5f * span + lo;
        const float v = rows[w + c];
        store(yhu + wgt * (v - yhu), dst + static_cast<size_t>(r) * w + c);
      }
    }
  }
}

}  // namespace

void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi) {
  pre_impl(hu, x, n, h, w, hp, wp, lo, hi);
}
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi) {
  pre_impl(hu, x, n, h, w, hp, wp, lo, hi);
}
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, float lo,
          float hi) {
  post_impl(y, hu, out, n, h, w, hp, wp, lo, hi);
}
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, float lo,
          float hi) {
  post_impl(y, hu, out, n, h, w, hp, wp, lo, hi);
}

}  // namespace hu
}  // namespace ctdn

// HU pre/post on the CPU. Every float operation is written in the order numpy/torch do it in
// ctdn.inference (float32 throughout, no fused multiply-add: built with -ffp-contract=off), so the
// results match the Python path to the last bit or close to it.

#include "ctdn/hu.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "ctdn/runtime.hpp"

namespace ctdn {
namespace hu {

namespace {

void check(int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  if (n < 1 || h < 1 || w < 1 || margin < 0 || hp < h + margin || wp < w + margin)
    throw Error("HU pre/post: bad sizes n=" + std::to_string(n) + " h=" + std::to_string(h) + " w=" +
                std::to_string(w) + " margin=" + std::to_string(margin) + " padded to " + std::to_string(hp) +
                "x" + std::to_string(wp));
  if (!(lo < hi)) throw Error("HU pre/post: the window must have low < high");
}

// Source index of padded index i in [0, padded): with a margin, the nearest edge pixel of i - margin;
// without, the slice itself then reflect or replicate at the far edge.
inline int source(int i, int size, int margin, bool reflect) {
  if (margin > 0) return std::min(std::max(i - margin, 0), size - 1);
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
void pre_impl(const T* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  check(n, h, w, hp, wp, margin, lo, hi);
  const bool reflect = (hp - h) < h && (wp - w) < w;
  const float span = static_cast<float>(static_cast<double>(hi) - static_cast<double>(lo));
  std::vector<int> cols(wp);
  for (int c = 0; c < wp; ++c) cols[c] = source(c, w, margin, reflect);
  for (int i = 0; i < n; ++i) {
    const T* src = hu + static_cast<size_t>(i) * h * w;
    float* dst = x + static_cast<size_t>(i) * hp * wp;
    for (int r = 0; r < hp; ++r) {
      const T* row = src + static_cast<size_t>(source(r, h, margin, reflect)) * w;
      float* out = dst + static_cast<size_t>(r) * wp;
      for (int c = 0; c < wp; ++c) {
        float v = std::min(std::max(value(row[cols[c]]), lo), hi);
        out[c] = 2.0f * (v - lo) / span - 1.0f;
      }
    }
  }
}

// The window's constants, each rounded to float32 once as numpy rounds a Python float against a
// float32 array.
struct Seam {
  float span, seam_hi, seam_lo, deep, top;
  Seam(float lo, float hi)
      : span(static_cast<float>(static_cast<double>(hi) - static_cast<double>(lo))),
        seam_hi(static_cast<float>(static_cast<double>(hi) - 50.0)),   // hi - SEAM_HIGH_HU
        seam_lo(static_cast<float>(static_cast<double>(lo) - 100.0)),  // lo - SEAM_LOW_HU[0]
        deep(static_cast<float>(static_cast<double>(lo) - 150.0)),     // lo - SEAM_LOW_HU[1]
        top(static_cast<float>(static_cast<double>(FLT_MAX) / 9.0)) {}  // ctdn.inference._SMOOTH_MAX
};

// ctdn.inference.passthrough_mask for pixel (r, c) of value v < lo: `rows` holds the input rows r - 1,
// r, r + 1 (replicated at the slice's edges; only in-slice neighbours are read).
bool padding(const float* rows, float v, int r, int c, int h, int w, float deep) {
  int same = 0, low = 0, real = 0;
  for (int dr = -1; dr <= 1; ++dr) {
    if (r + dr < 0 || r + dr >= h) continue;
    for (int dc = -1; dc <= 1; ++dc) {
      if ((dr == 0 && dc == 0) || c + dc < 0 || c + dc >= w) continue;
      const float nb = rows[(dr + 1) * w + c + dc];
      ++real;
      same += nb == v;
      low += nb <= deep;
    }
  }
  return 2 * same >= real || (v <= deep && 2 * low >= real);
}

template <typename T>
void post_impl(const float* y, const T* hu, T* out, int n, int h, int w, int hp, int wp, int margin, float lo,
               float hi) {
  check(n, h, w, hp, wp, margin, lo, hi);
  const Seam k(lo, hi);
  std::vector<float> rows(3 * static_cast<size_t>(w));  // the input rows r-1, r, r+1 as float
  std::vector<float> soft(3 * static_cast<size_t>(w));  // the same, clipped to [lo - 150, FLT_MAX / 9]
  for (int i = 0; i < n; ++i) {
    const T* src = hu + static_cast<size_t>(i) * h * w;
    const float* net = y + static_cast<size_t>(i) * hp * wp + static_cast<size_t>(margin) * wp + margin;
    T* dst = out + static_cast<size_t>(i) * h * w;
    for (int r = 0; r < h; ++r) {
      const int rr[3] = {std::max(r - 1, 0), r, std::min(r + 1, h - 1)};
      for (int j = 0; j < 3; ++j)
        for (int c = 0; c < w; ++c) {
          const float v = value(src[static_cast<size_t>(rr[j]) * w + c]);
          rows[j * w + c] = v;
          soft[j * w + c] = std::min(std::max(v, k.deep), k.top);
        }
      for (int c = 0; c < w; ++c) {
        const int cc[3] = {std::max(c - 1, 0), c, std::min(c + 1, w - 1)};
        // torch's avg_pool2d on the CPU: a float sum over the window row by row, then / 9.
        float sum = 0.f;
        for (int j = 0; j < 3; ++j)
          for (int q = 0; q < 3; ++q) sum += soft[j * w + cc[q]];
        const float s = sum / 9.0f;
        const float w_hi = std::min(std::max((s - k.seam_hi) / 50.0f, 0.f), 1.f);
        const float w_lo = std::min(std::max((k.seam_lo - s) / 50.0f, 0.f), 1.f);
        const float wgt = std::max(w_hi, w_lo);
        const float v = rows[w + c];
        T* o = dst + static_cast<size_t>(r) * w + c;
        if (wgt == 1.f || (v < lo && padding(rows.data(), v, r, c, h, w, k.deep))) {
          *o = src[static_cast<size_t>(r) * w + c];  // bit-exactly the input
          continue;
        }
        const float yhu = (net[static_cast<size_t>(r) * wp + c] + 1.0f) * 0.5f * k.span + lo;
        store(yhu + wgt * (v - yhu), o);
      }
    }
  }
}

}  // namespace

void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  pre_impl(hu, x, n, h, w, hp, wp, margin, lo, hi);
}
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi) {
  pre_impl(hu, x, n, h, w, hp, wp, margin, lo, hi);
}
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi) {
  post_impl(y, hu, out, n, h, w, hp, wp, margin, lo, hi);
}
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi) {
  post_impl(y, hu, out, n, h, w, hp, wp, margin, lo, hi);
}

long long count_nonfinite(const float* y, int n, int h, int w, int hp, int wp, int margin) {
  long long bad = 0;
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < h; ++r) {
      const float* row = y + (static_cast<size_t>(i) * hp + r + margin) * wp + margin;
      for (int c = 0; c < w; ++c) bad += !std::isfinite(row[c]);
    }
  return bad;
}

}  // namespace hu
}  // namespace ctdn

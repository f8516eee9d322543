// HU window pre/post-processing on the CPU: the same arithmetic as ctdn.Denoiser (Python) and the CUDA
// kernels (ctdn/hu_cuda.hpp), so the three give the same numbers.
//
// Layouts (host memory, contiguous, row-major):
//   hu, out: n slices of h x w (int16 or float32 HU)
//   x, y:    n x 1 x hp x wp float32, the network's unit space [-1, 1] (padded to hp >= h, wp >= w)
#pragma once

#include <cstdint>

namespace ctdn {
namespace hu {

// ceil(size / multiple) * multiple: the padded size ctdn.inference.pad_to_multiple gives.
inline int padded_size(int size, int multiple) { return (size + multiple - 1) / multiple * multiple; }

// HU -> network input: x = 2 (clip(hu, lo, hi) - lo) / (hi - lo) - 1, padded at the bottom/right to
// hp x wp: reflect (no edge repeat, like torch's F.pad reflect) when hp - h < h and wp - w < w, else
// replicate.
void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi);
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi);

// Network output -> HU: crop y to h x w, yhu = (y + 1) * 0.5 * (hi - lo) + lo, then pass the input
// through outside the window: s = 3x3 mean of hu (replicate padding), wgt = max(clip((s - (hi - 50)) /
// 50, 0, 1), clip(((lo - 100) - s) / 50, 0, 1)), out = yhu + wgt (hu - yhu); int16 out is rounded half
// to even and saturated to [-32768, 32767]. out may not alias hu.
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, float lo,
          float hi);
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, float lo,
          float hi);

}  // namespace hu
}  // namespace ctdn

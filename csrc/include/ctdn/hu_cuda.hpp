// HU window pre/post-processing on a CUDA device: the same arithmetic as ctdn.Denoiser (Python) and
// csrc/src/hu.cpp (CPU), one kernel launch each, on the caller's stream. Compiled only when nvcc was
// found (CTDN_WITH_CUDA); plain C++17 here, so host code compiled by g++ can include it.
//
// Layouts (all pointers in device memory of the current device, contiguous, row-major):
//   hu, out: n slices of h x w (int16 or float32 HU)
//   x, y:    n x 1 x hp x wp float32, the network's unit space [-1, 1] (padded)
// hp >= h and wp >= w are the padded sizes the network runs at (usually padded_size(h, multiple)).
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t

#include <cstdint>

namespace ctdn {
namespace cuda {

// ceil(size / multiple) * multiple: the padded size ctdn.inference.pad_to_multiple gives.
inline int padded_size(int size, int multiple) { return (size + multiple - 1) / multiple * multiple; }

// HU -> network input: x[i, 0, r, c] = unit(hu[i, src(r), src(c)]) with unit = 2 (clip(hu, lo, hi) - lo) /
// (hi - lo) - 1, and src() padding the bottom/right: reflect (no edge repeat, like torch's F.pad
// reflect) when hp - h < h and wp - w < w, else replicate. Enqueued on `stream`; returns at once.
// Throws ctdn::Error on bad arguments or a failed launch.
void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi,
         cudaStream_t stream);
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, float lo, float hi,
         cudaStream_t stream);

// Network output -> HU: crops y (n x 1 x hp x wp, unit) to h x w, maps it to HU (yhu = (y + 1) / 2 *
// (hi - lo) + lo) and passes the input through outside the window: s = 3x3 mean of hu (replicate
// padding), wgt = max(clip((s - (hi - 50)) / 50, 0, 1), clip(((lo - 100) - s) / 50, 0, 1)),
// out = yhu + wgt (hu - yhu); int16 out is rounded half to even and saturated. `hu` is the input
// given to pre() (unpadded); out may not alias hu. Enqueued on `stream`; throws ctdn::Error like pre.
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, float lo,
          float hi, cudaStream_t stream);
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, float lo,
          float hi, cudaStream_t stream);

}  // namespace cuda
}  // namespace ctdn

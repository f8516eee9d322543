// HU window pre/post-processing on a CUDA device: the same arithmetic as ctdn.Denoiser (Python) and
// csrc/src/hu.cpp (CPU), one kernel launch each, on the caller's stream. Compiled only when nvcc was
// found (CTDN_WITH_CUDA); plain C++17 here, so host code compiled by g++ can include it.
//
// Layouts (all pointers in device memory of the current device, contiguous, row-major):
//   hu, out: n slices of h x w (int16 or float32 HU)
//   x, y:    n x 1 x hp x wp float32, the network's unit space [-1, 1], the slice at rows
//            [margin, margin + h) and columns [margin, margin + w)
// hp >= h + margin and wp >= w + margin are the padded sizes the network runs at (usually
// padded_size(h + 2 * margin, multiple)).
#pragma once

#include <cuda_runtime_api.h>  // cudaStream_t

#include <cstdint>

namespace ctdn {
namespace cuda {

// ceil(size / multiple) * multiple: the padded size ctdn.inference.pad_to_multiple gives.
inline int padded_size(int size, int multiple) { return (size + multiple - 1) / multiple * multiple; }

// HU -> network input: x[i, 0, r, c] = unit(hu[i, src(r), src(c)]) with unit = 2 (clip(hu, lo, hi) - lo) /
// (hi - lo) - 1. margin > 0 (ctdn.inference.pad_for_network): src() is the nearest edge pixel of
// r - margin (numpy's "edge" padding on every side). margin == 0 (pad_to_multiple): src() pads the
// bottom/right only, reflect (no edge repeat, like torch's F.pad reflect) when hp - h < h and wp - w < w,
// else replicate. Enqueued on `stream`; returns at once. Throws ctdn::Error on bad arguments or a failed
// launch.
void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi,
         cudaStream_t stream);
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi,
         cudaStream_t stream);

// Network output -> HU (ctdn.inference.blend): crops y (n x 1 x hp x wp, unit) at (margin, margin) to
// h x w, maps it to HU (yhu = (y + 1) / 2 * (hi - lo) + lo) and passes the input through outside the
// window: s = 3x3 mean (replicate padding) of clip(hu, lo - 150, FLT_MAX / 9), wgt = max(clip((s - (hi -
// 50)) / 50, 0, 1), clip(((lo - 100) - s) / 50, 0, 1)), out = yhu + wgt (hu - yhu). A pixel is the input
// bit-exactly where wgt == 1 or it is padding: below lo with at least half of its in-slice neighbours
// exactly equal to it, or at or below lo - 150 with at least half of them there too. int16 out is
// rounded half to even and saturated. `hu` is the input given to pre() (unpadded); out may not alias hu.
// `nonfinite` (device memory, may be null) is incremented once per NaN/inf network value the crop
// reads, so the caller can refuse the batch. Enqueued on `stream`; throws ctdn::Error like pre.
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi, unsigned long long* nonfinite, cudaStream_t stream);
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi, unsigned long long* nonfinite, cudaStream_t stream);

}  // namespace cuda
}  // namespace ctdn

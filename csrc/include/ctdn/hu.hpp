// HU window pre/post-processing on the CPU: the same arithmetic as ctdn.Denoiser (Python) and the CUDA
// kernels (ctdn/hu_cuda.hpp), so the three give the same numbers.
//
// Layouts (host memory, contiguous, row-major):
//   hu, out: n slices of h x w (int16 or float32 HU)
//   x, y:    n x 1 x hp x wp float32, the network's unit space [-1, 1], the slice at rows
//            [margin, margin + h) and columns [margin, margin + w) (hp >= h + margin, wp >= w + margin)
#pragma once

#include <cstdint>

namespace ctdn {
namespace hu {

// Replicated pixels of context around each slice (ctdn.inference.MARGIN): the network's convolutions
// zero-pad, so a slice's own border pixels are computed like its interior only with context around it.
constexpr int kMargin = 16;

// ceil(size / multiple) * multiple: the padded size ctdn.inference.pad_to_multiple gives.
inline int padded_size(int size, int multiple) { return (size + multiple - 1) / multiple * multiple; }

// HU -> network input: x = 2 (clip(hu, lo, hi) - lo) / (hi - lo) - 1, padded to hp x wp.
// margin > 0 (ctdn.inference.pad_for_network): the slice at (margin, margin), every padded pixel a copy
// of the nearest edge pixel (numpy's "edge"). margin == 0 (pad_to_multiple): padded at the bottom/right
// only, reflect (no edge repeat, like torch's F.pad reflect) when hp - h < h and wp - w < w, else
// replicate.
void pre(const int16_t* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi);
void pre(const float* hu, float* x, int n, int h, int w, int hp, int wp, int margin, float lo, float hi);

// Network output -> HU (ctdn.inference.blend): crop y at (margin, margin) to h x w, yhu = (y + 1) * 0.5 *
// (hi - lo) + lo, then pass the input through outside the window: s = 3x3 mean (replicate padding) of
// clip(hu, lo - 150, FLT_MAX / 9), wgt = max(clip((s - (hi - 50)) / 50, 0, 1), clip(((lo - 100) - s) /
// 50, 0, 1)), out = yhu + wgt (hu - yhu). A pixel is the input bit-exactly where wgt == 1 or it is
// padding: below lo with at least half of its in-slice neighbours exactly equal to it, or at or below
// lo - 150 with at least half of them there too. int16 out is rounded half to even and saturated to
// [-32768, 32767]. out may not alias hu.
void post(const float* y, const int16_t* hu, int16_t* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi);
void post(const float* y, const float* hu, float* out, int n, int h, int w, int hp, int wp, int margin,
          float lo, float hi);

// How many of y's values in the cropped region (what post() reads) are NaN or inf.
long long count_nonfinite(const float* y, int n, int h, int w, int hp, int wp, int margin);

}  // namespace hu
}  // namespace ctdn

// Winograd F(2x2, 3x3) transforms for a 3x3, stride-1, zero-padding-1 convolution on MindSpore's
// CPU backend, called through ops.Custom(func_type="aot") by models/cpu_kernels.py. The product in
// the transformed domain is MindSpore's own BatchMatMul; these kernels do the data movement.
//
// With d a 4x4 input patch (tiles of 2x2 outputs overlap by 2), g a 3x3 filter and
//   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
//   G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
//   A^T = [[1, 1, 1, 0], [0, 1, -1, -1]],
// the 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A (. elementwise), i.e. with
// U[xi] = (G g G^T)[xi] and V[xi] = (B^T d B)[xi] for the 16 positions xi, the sum over input
// channels is 16 independent matrix products M[xi] = U[xi] @ V[xi]: 2.25x fewer multiplications
// than the direct convolution.
//
// Layouts (float32, contiguous):
//   WinogradFilter: g (O, C, 3, 3)            -> U (16, O, C)
//   WinogradInput:  x (B, C, H, W)            -> V (16, C, T), T = B * ceil(H/2) * ceil(W/2) tiles
//   WinogradOutput: M (16, O, T), bias (O,), x (B, C, H, W) (read for its shape only)
//                                             -> y (B, O, H, W) = A^T M A + bias, cropped to H x W
#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel.h"

using mindscience_kernels::parallel_for;

namespace {

inline int64_t tiles(int64_t size) { return (size + 1) / 2; }

}  // namespace

extern "C" int WinogradFilter(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                              void *) {
  if (nparam != 2 || ndims[0] != 4 || shapes[0][2] != 3 || shapes[0][3] != 3) return 1;
  const int64_t plane = shapes[0][0] * shapes[0][1];  // one 3x3 filter per (o, c)
  const float *g = static_cast<const float *>(params[0]);
  float *u = static_cast<float *>(params[1]);
  // Blocks of filters into a local (16, block) buffer, copied out as 16 contiguous runs (the 16
  // planes lie plane*4 bytes apart: written filter by filter they collide in the cache).
  constexpr int64_t kBlock = 256;
  parallel_for((plane + kBlock - 1) / kBlock, 16, [=](int64_t begin, int64_t end) {
    float local[16 * kBlock];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kBlock, count = std::min(kBlock, plane - first);
      for (int64_t f = 0; f < count; ++f) {
        const float *k = g + (first + f) * 9;
        float gg[4][3];  // G g
        for (int j = 0; j < 3; ++j) {
          gg[0][j] = k[j];
          gg[1][j] = 0.5f * (k[j] + k[3 + j] + k[6 + j]);
          gg[2][j] = 0.5f * (k[j] - k[3 + j] + k[6 + j]);
          gg[3][j] = k[6 + j];
        }
        for (int i = 0; i < 4; ++i) {  // (G g) G^T
          local[(i * 4 + 0) * kBlock + f] = gg[i][0];
          local[(i * 4 + 1) * kBlock + f] = 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]);
          local[(i * 4 + 2) * kBlock + f] = 0.5f * (gg[i][0] - gg[i][1] + gg[i][2]);
          local[(i * 4 + 3) * kBlock + f] = gg[i][2];
        }
      }
      for (int xi = 0; xi < 16; ++xi) {
        std::copy(local + xi * kBlock, local + xi * kBlock + count, u + xi * plane + first);
      }
    }
  });
  return 0;
}

extern "C" int WinogradInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                             void *) {
  if (nparam != 2 || ndims[0] != 4) return 1;
  const int64_t batch = shapes[0][0], channels = shapes[0][1], height = shapes[0][2], width = shapes[0][3];
  const int64_t tiles_h = tiles(height), tiles_w = tiles(width), per_image = tiles_h * tiles_w;
  const int64_t num_tiles = batch * per_image, stride = channels * num_tiles;  // stride between xi planes
  const float *x = static_cast<const float *>(params[0]);
  float *v = static_cast<float *>(params[1]);
  // One (b, c) image at a time into a local (16, tiles) buffer, copied out as 16 contiguous runs:
  // writing V tile by tile (16 addresses a multiple of C*T*4 bytes apart) thrashed the cache and
  // took 7x longer. Within the image, a row of tiles at a time: its 4 input rows zero-padded to
  // 2*tiles_w + 2 columns, B^T d down the rows for every column, then d B across each tile.
  const int64_t padded_w = 2 * tiles_w + 2;
  parallel_for(batch * channels, 8, [=](int64_t begin, int64_t end) {
    std::vector<float> rows(4 * padded_w), bt_d(4 * padded_w), local(16 * per_image);
    for (int64_t image_index = begin; image_index < end; ++image_index) {
      const int64_t b = image_index / channels, c = image_index % channels;
      const float *image = x + image_index * height * width;
      for (int64_t ti = 0; ti < tiles_h; ++ti) {
        for (int r = 0; r < 4; ++r) {
          float *row = rows.data() + r * padded_w;
          const int64_t source = 2 * ti - 1 + r;
          std::fill(row, row + padded_w, 0.0f);
          if (source >= 0 && source < height) std::copy(image + source * width, image + (source + 1) * width, row + 1);
        }
        const float *d0 = rows.data(), *d1 = d0 + padded_w, *d2 = d1 + padded_w, *d3 = d2 + padded_w;
        float *e0 = bt_d.data(), *e1 = e0 + padded_w, *e2 = e1 + padded_w, *e3 = e2 + padded_w;
#pragma omp simd
        for (int64_t col = 0; col < padded_w; ++col) {
          e0[col] = d0[col] - d2[col];
          e1[col] = d1[col] + d2[col];
          e2[col] = d2[col] - d1[col];
          e3[col] = d1[col] - d3[col];
        }
        float *out = local.data() + ti * tiles_w;
        for (int r = 0; r < 4; ++r) {
          const float *e = bt_d.data() + r * padded_w;
          float *o0 = out + (r * 4 + 0) * per_image, *o1 = out + (r * 4 + 1) * per_image;
          float *o2 = out + (r * 4 + 2) * per_image, *o3 = out + (r * 4 + 3) * per_image;
#pragma omp simd
          for (int64_t tj = 0; tj < tiles_w; ++tj) {
            const float a = e[2 * tj], p = e[2 * tj + 1], q = e[2 * tj + 2], z = e[2 * tj + 3];
            o0[tj] = a - q;
            o1[tj] = p + q;
            o2[tj] = q - p;
            o3[tj] = p - z;
          }
        }
      }
      float *planes = v + c * num_tiles + b * per_image;
      for (int xi = 0; xi < 16; ++xi) {
        std::copy(local.data() + xi * per_image, local.data() + (xi + 1) * per_image, planes + xi * stride);
      }
    }
  });
  return 0;
}

extern "C" int WinogradOutput(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                              void *) {
  // inputs m, bias, x (read for its shape), weight (read only by the gradient); output y
  if (nparam != 5 || ndims[0] != 3 || ndims[2] != 4) return 1;
  const int64_t out_channels = shapes[0][1];
  const int64_t batch = shapes[2][0], height = shapes[2][2], width = shapes[2][3];
  const int64_t tiles_h = tiles(height), tiles_w = tiles(width), per_image = tiles_h * tiles_w;
  const int64_t num_tiles = batch * per_image, stride = out_channels * num_tiles;
  if (shapes[0][2] != num_tiles) return 1;
  const float *m = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[4]);
  // One (b, o) image at a time: its 16 planes copied in as contiguous runs (see WinogradInput),
  // then a row of tiles at a time, A^T M down the 4 rows and M A across into two output rows.
  const int64_t padded_w = 2 * tiles_w;
  parallel_for(batch * out_channels, 8, [=](int64_t begin, int64_t end) {
    std::vector<float> at_m(2 * 4 * tiles_w), out_rows(2 * padded_w), local(16 * per_image);
    for (int64_t image_index = begin; image_index < end; ++image_index) {
      const int64_t b = image_index / out_channels, o = image_index % out_channels;
      const float *planes = m + o * num_tiles + b * per_image;
      for (int xi = 0; xi < 16; ++xi) {
        std::copy(planes + xi * stride, planes + xi * stride + per_image, local.data() + xi * per_image);
      }
      const float *in = local.data();
      float *image = y + image_index * height * width;
      const float shift = bias[o];
      for (int64_t ti = 0; ti < tiles_h; ++ti) {
        const float *run = in + ti * tiles_w;
        for (int s = 0; s < 4; ++s) {  // column s of every tile's 4x4 M: A^T M
          const float *m0 = run + (0 * 4 + s) * per_image, *m1 = run + (1 * 4 + s) * per_image;
          const float *m2 = run + (2 * 4 + s) * per_image, *m3 = run + (3 * 4 + s) * per_image;
          float *top = at_m.data() + s * tiles_w, *bottom = at_m.data() + (4 + s) * tiles_w;
#pragma omp simd
          for (int64_t tj = 0; tj < tiles_w; ++tj) {
            top[tj] = m0[tj] + m1[tj] + m2[tj];
            bottom[tj] = m1[tj] - m2[tj] - m3[tj];
          }
        }
        for (int r = 0; r < 2; ++r) {  // (A^T M) A
          const float *a0 = at_m.data() + (r * 4 + 0) * tiles_w, *a1 = a0 + tiles_w;
          const float *a2 = a1 + tiles_w, *a3 = a2 + tiles_w;
          float *row = out_rows.data() + r * padded_w;
#pragma omp simd
          for (int64_t tj = 0; tj < tiles_w; ++tj) {
            row[2 * tj] = a0[tj] + a1[tj] + a2[tj] + shift;
            row[2 * tj + 1] = a1[tj] - a2[tj] - a3[tj] + shift;
          }
          const int64_t target = 2 * ti + r;
          if (target < height) std::copy(row, row + width, image + target * width);
        }
      }
    }
  });
  return 0;
}

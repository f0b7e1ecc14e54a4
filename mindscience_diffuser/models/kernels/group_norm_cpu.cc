// Group normalisation, optionally followed by SiLU, for MindSpore's CPU backend.
//
// Called through ops.Custom(func_type="aot") by mindscience_diffuser/models/cpu_kernels.py, which
// compiles this file with g++ -O3 -march=native -fopenmp-simd -fno-trapping-math (no -ffast-math:
// the statistics must not be reassociated beyond what `omp simd reduction` allows). Plain C++, no
// MindSpore headers: the aot calling convention passes raw pointers and shapes.
//
// Inputs, all float32 and contiguous:
//   params[0] x      (B, G, Cg, S)  the input viewed as B samples, G groups of Cg channels, S spatial
//   params[1] weight (G, Cg)        per-channel scale
//   params[2] bias   (G, Cg)        per-channel shift
//   params[3] eps    (1,)           the variance floor
//   params[4] y      (B, G, Cg, S)  the output
// For each (b, g), over its n = Cg*S elements, in one pass and in double precision:
//   mean = sum(x) / n,  var = sum(x^2) / n - mean^2  (biased, as torch; double makes the
//   cancellation in E[x^2] - mean^2 harmless at float32 output precision),
//   y = (x - mean) * (weight_c / sqrt(var + eps)) + bias_c,
// and GroupNormSiLU returns y * sigmoid(y) = y / (1 + exp(-y)).
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "parallel.h"

namespace {

// exp(v) in a form the compiler vectorises (glibc's expf is only vectorised under -ffast-math):
// exp(v) = 2^n * exp(r) with n = round(v / ln2) and r = v - n*ln2 (ln2 split in two constants
// so r is exact), exp(r) by its degree-6 Taylor polynomial on |r| <= ln2/2 (error below 2 ulp).
// v is clamped to [-87, 88] so 2^n stays a normal float.
inline float exp_lane(float v) {
  v = v < -87.0f ? -87.0f : v;
  v = v > 88.0f ? 88.0f : v;
  // Round to nearest by adding and subtracting 1.5 * 2^23: exact for |v / ln2| < 2^22, and a
  // plain add the vectoriser accepts where nearbyint is a library call.
  const float round_magic = 12582912.0f;
  const float n = (v * 1.44269504088896341f + round_magic) - round_magic;
  const float r = (v - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_to_n;
  std::memcpy(&two_to_n, &exponent_bits, sizeof(two_to_n));
  return p * two_to_n;
}

// Flush-to-zero / denormals-are-zero for the duration of one kernel call, restored on exit (the
// calling thread belongs to MindSpore's pool and runs other kernels). Without it some vector
// lanes of the SiLU loop go through denormal micro-code assists: 10x slower on SSE builds.
class FlushDenormals {
 public:
#if defined(__SSE__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

template <bool kSilu>
int group_norm(int nparam, void **params, int *ndims, int64_t **shapes) {
  if (nparam != 5 || ndims[0] != 4 || ndims[4] != 4) return 1;
  const int64_t batch = shapes[0][0], groups = shapes[0][1], group_channels = shapes[0][2], spatial = shapes[0][3];
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  const double eps = static_cast<const float *>(params[3])[0];
  float *y = static_cast<float *>(params[4]);
  const int64_t group_size = group_channels * spatial;

  // (b, g) groups are independent: split them over the cores, with at least 64k elements per
  // thread (a thread start costs about as much as normalising 20k elements).
  const int64_t groups_per_thread = (65536 + group_size - 1) / group_size;
  mindscience_kernels::parallel_for(batch * groups, groups_per_thread, [=](int64_t begin, int64_t end) {
    FlushDenormals flush;  // per thread: MXCSR is a per-thread register
    for (int64_t sample_group = begin; sample_group < end; ++sample_group) {
      const float *xg = x + sample_group * group_size;
      float *yg = y + sample_group * group_size;
      double sum = 0.0, sum_sq = 0.0;
#pragma omp simd reduction(+ : sum, sum_sq)
      for (int64_t i = 0; i < group_size; ++i) {
        const double v = xg[i];
        sum += v;
        sum_sq += v * v;
      }
      const double mean = sum / group_size;
      const double var = sum_sq / group_size - mean * mean;
      const double rstd = 1.0 / std::sqrt((var > 0.0 ? var : 0.0) + eps);
      const float mean_f = static_cast<float>(mean);
      const int64_t first_channel = (sample_group % groups) * group_channels;
      for (int64_t c = 0; c < group_channels; ++c) {
        const float scale = static_cast<float>(weight[first_channel + c] * rstd);
        const float shift = bias[first_channel + c];
        const float *xc = xg + c * spatial;
        float *yc = yg + c * spatial;
#pragma omp simd
        for (int64_t i = 0; i < spatial; ++i) {
          const float v = (xc[i] - mean_f) * scale + shift;
          yc[i] = kSilu ? v / (1.0f + exp_lane(-v)) : v;
        }
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" int GroupNorm(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return group_norm<false>(nparam, params, ndims, shapes);
}

extern "C" int GroupNormSiLU(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  return group_norm<true>(nparam, params, ndims, shapes);
}

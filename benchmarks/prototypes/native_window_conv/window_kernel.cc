// Prototype (measured, not part of the package): window-granularity ReDy convolution
// fused into one XLA:CPU custom call (XLA FFI). See README.md in this folder.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPix = 6;    // output pixels per register block
constexpr int64_t kLanes = 16; // output columns per register block

typedef float v8 __attribute__((vector_size(32)));

inline v8 Load8(const float* p) {
  v8 r;
  std::memcpy(&r, p, sizeof r);
  return r;
}

struct Geometry {
  int64_t b, hp, wp, c, ho, wo, t, n, npad, kh, kw, sh, sw, dh, dw, ct;
};

// One output row (image bi, row oy): per block of kPix pixels and per row tile, the
// tile's window values requantised with that pixel's constants, then their exact
// float32 product with the tile's weight rows, summed over tiles in int32.
void Row(const Geometry& g, const float* x, const float* prm, const float* w, int32_t* y,
         int64_t bi, int64_t oy, float* buf, int32_t* acc) {
  const int64_t taps = g.kh * g.kw;
  const int64_t rmax = taps * g.ct;
  for (int64_t ox0 = 0; ox0 < g.wo; ox0 += kPix) {
    const int64_t np = std::min(kPix, g.wo - ox0);
    std::fill(acc, acc + kPix * g.npad, 0);
    int64_t row0 = 0;
    for (int64_t t = 0; t < g.t; ++t) {
      const int64_t c0 = t * g.ct, width = std::min(g.ct, g.c - c0), rows = taps * width;
      // this tile's channels as their own (B, Hp, Wp, width) array
      const float* xt = x + g.b * g.hp * g.wp * c0;
      const int64_t run = g.dw == 1 ? g.kw * width : width;  // contiguous taps of a kernel row
      const int64_t runs = g.dw == 1 ? 1 : g.kw;
      for (int64_t p = 0; p < kPix; ++p) {
        float* bp = buf + p * rmax;
        if (p >= np) { std::fill(bp, bp + rows, 0.f); continue; }
        const float* k = prm + ((((bi * g.ho + oy) * g.wo) + ox0 + p) * g.t + t) * 6;
        const float off = k[0], inv = k[1], lo = k[2], hi = k[3], step = k[4];
        const float base = k[5];
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t iy = oy * g.sh + i * g.dh;
          for (int64_t j = 0; j < runs; ++j) {
            const int64_t ix = (ox0 + p) * g.sw + j * g.dw;
            const float* __restrict src = xt + ((bi * g.hp + iy) * g.wp + ix) * width;
            float* __restrict dst = bp + (i * g.kw + j) * width;
            for (int64_t e = 0; e < run; ++e) {
              float q = std::floor((src[e] - off) * inv + 0.5f);
              q = std::min(std::max(q, lo), hi);
              dst[e] = q * step + base;
            }
          }
        }
      }
      for (int64_t nb = 0; nb < g.npad; nb += kLanes) {
        v8 a[kPix][2] = {};
        const float* wr = w + row0 * g.npad + nb;
        for (int64_t r = 0; r < rows; ++r, wr += g.npad) {
          const v8 w0 = Load8(wr), w1 = Load8(wr + 8);
#pragma GCC unroll 8
          for (int64_t p = 0; p < kPix; ++p) {
            const float v = buf[p * rmax + r];
            a[p][0] += v * w0;
            a[p][1] += v * w1;
          }
        }
#pragma GCC unroll 8
        for (int64_t p = 0; p < kPix; ++p) {
          int32_t* ap = acc + p * g.npad + nb;
          for (int64_t l = 0; l < 8; ++l) {
            ap[l] += (int32_t)a[p][0][l];
            ap[8 + l] += (int32_t)a[p][1][l];
          }
        }
      }
      row0 += rows;
    }
    for (int64_t p = 0; p < np; ++p) {
      int32_t* out = y + ((bi * g.ho + oy) * g.wo + ox0 + p) * g.n;
      std::copy(acc + p * g.npad, acc + p * g.npad + g.n, out);
    }
  }
}

struct Progress {
  std::atomic<int64_t> next{0}, done{0};
};

ffi::Error WindowConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                          ffi::Buffer<ffi::F32> prm, ffi::Buffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::S32> y, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t dh, int64_t dw, int64_t ct) {
  auto xd = x.dimensions(), pd = prm.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || pd.size() != 5 || wd.size() != 2 || yd.size() != 4 || pd[4] != 6)
    return ffi::Error::InvalidArgument("redy_window_conv: unexpected operand ranks");
  Geometry g{xd[0], xd[1], xd[2], xd[3], pd[1], pd[2], pd[3], yd[3], wd[1],
             kh, kw, sh, sw, dh, dw, ct};
  if (g.npad % kLanes || g.n > g.npad || wd[0] != kh * kw * g.c || ct <= 0)
    return ffi::Error::InvalidArgument("redy_window_conv: weights do not match");
  const float* xp = x.typed_data();
  const float* pp = prm.typed_data();
  const float* wp = w.typed_data();
  int32_t* yp = y->typed_data();
  const int64_t items = g.b * g.ho;
  auto progress = std::make_shared<Progress>();
  auto work = [=]() {
    std::vector<float> buf(kPix * kh * kw * g.ct);
    std::vector<int32_t> acc(kPix * g.npad);
    for (int64_t i; (i = progress->next.fetch_add(1)) < items;) {
      Row(g, xp, pp, wp, yp, i / g.ho, i % g.ho, buf.data(), acc.data());
      progress->done.fetch_add(1);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), items) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work]() { work(); });
  work();
  while (progress->done.load() < items) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedyWindowConv, WindowConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("dh")
                                  .Attr<int64_t>("dw")
                                  .Attr<int64_t>("ct"));

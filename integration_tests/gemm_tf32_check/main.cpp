// Runs lapis::detail::GemmTiles (gemm_tf32.hpp) and WgmmaTiles (gemm_wgmma.hpp) on the host:
// every team of the launch in turn, and in each team every thread in turn between the barriers
// (their pipeline with a team that runs all threads), the mma (wgmma) emulated from the same
// fragments' elements. Shared memory and the output start as NaN, so a value read before it
// is staged or an output left unwritten shows. DIR holds a.bin ([M][K]), b.bin ([N][K] for
// linear, [K][N] for matmul), bias.bin ([N]) and c.bin ([M][N], C's start for INIT
// accumulate); the result goes to DIR/out.bin.
// Kind `rows` runs lapis::detail::linear_rows (few output columns) on the host instead;
// `rounded` and `rows_rounded` are `linear` and `rows` with the outputs stored rounded to tf32
// (GemmProblem::round_output). Shape `wgmma_rounded` runs DirectHopperTiles, the tiles of
// operands that hold tf32 values already (the test writes them so). Precision bf16 (shape
// `wgmma`: Bf16HopperTiles; `plain`: lapis::linear<host, bf16>'s loop) rounds A and B to
// bfloat16 first; kind `bf16_out` stores C in bfloat16 (GemmProblem::c16), written back as
// float.
#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "lapis/gemm_tf32.hpp"

namespace {

using lapis::detail::GemmProblem;

template <class Tiles>
struct EveryThread {
  std::vector<typename Tiles::Acc> accs = std::vector<typename Tiles::Acc>(Tiles::threads);
  template <class F>
  void each(const F& f) {
    for (int rank = 0; rank < Tiles::threads; ++rank) f(rank, accs[rank]);
  }
  void barrier() const {}
  void commit() const {}
  template <int Pending>
  void wait() const {}
  void proxy_fence() const {}
  template <int Pending>
  void mma_wait() const {}
  // The wgmma tiles' copy engine (Tma): both boxes of the step, 32 k of A's 128 rows and B's
  // BN from (k0, the tile's first row), laid out with the 128-byte swizzle (the 16-byte chunk
  // c of row r at chunk c ^ r % 8), zeros past the edges.
  void start_barriers(unsigned char*) const {}
  void boxes_landed(unsigned char*, int, int) const {}
  template <class Tile>
  void copy_boxes(const GemmProblem& p, const Tile& t, unsigned char* base, const int k0,
                  const int stage) const {
    using E = typename Tiles::E;
    constexpr int per_chunk = Tiles::per_chunk, bytes = int(sizeof(E));
    unsigned char* const slot = Tiles::slot(base, stage);
    for (int row = 0; row < Tiles::BM + Tiles::columns; ++row)
      for (int k = 0; k < Tiles::BK; ++k) {
        const bool of_a = row < Tiles::BM;
        const int r = of_a ? t.m0 + row : t.n0 + row - Tiles::BM;
        const bool inside = r < (of_a ? p.m : p.n) && k0 + k < p.k;
        E v{};
        if (inside)
          v = of_a ? Tiles::operand_a(p)[int64_t(r) * p.lda + k0 + k]
                   : Tiles::operand_b(p)[int64_t(r) * p.ldb + k0 + k];
        std::memcpy(slot + row * 128 + (((k / per_chunk) ^ (row % 8)) << 4) +
                        bytes * (k % per_chunk),
                    &v, bytes);
      }
  }
};

template <class Tiles>
void run(const GemmProblem& p) {
  std::vector<float> smem(Tiles::scratch / sizeof(float));
  for (int league_rank = 0; league_rank < Tiles::teams(p); ++league_rank) {
    for (float& v : smem) v = std::nanf("");
    EveryThread<Tiles> team;
    Tiles::pipeline(p, Tiles::tile(p, league_rank), smem.data(), team);
  }
}

template <bool WeightRows, lapis::Precision P>
void dispatch(const std::string& shape, const GemmProblem& p) {
  using namespace lapis::detail;
  if (shape == "large")
    run<GemmTiles<128, 128, 64, 32, 16, 2, 2, WeightRows, P>>(p);
  else if (shape == "narrow")  // the fp32 large tile: 128 x 64, k steps of 16 three deep
    run<GemmTiles<128, 64, 64, 32, 16, 3, 4, WeightRows, P>>(p);
  else if (shape == "deep")  // run_cuda's k steps of 32, three deep
    run<GemmTiles<128, 128, 64, 32, 32, 3, 2, WeightRows, P>>(p);
  else if (shape == "staged")  // the same, the outputs written through shared memory
    run<GemmTiles<128, 128, 64, 32, 32, 3, 2, WeightRows, P, true>>(p);
  else if (shape == "wgmma" || shape == "wgmma_wide" || shape == "wgmma_direct" ||
           shape == "wgmma_tma" || shape == "wgmma_rounded") {
    if constexpr (WeightRows) {  // Hopper's tiles (linear)
      if (shape == "wgmma")
        run<HopperTiles<P>>(p);
      else if (shape == "wgmma_rounded" && P == lapis::Precision::tf32)
        run<DirectHopperTiles>(p);
      else if (shape == "wgmma_tma")  // copied by the tensor memory accelerator
        run<WgmmaTiles<128, P == lapis::Precision::fp32 ? 3 : 4,
                       P == lapis::Precision::fp32 ? 2 : 3, P, true>>(p);
      else if (shape == "wgmma_wide")  // 128 x 256 blocks
        run<WgmmaTiles<256, 2, 2, P>>(p);
      else if constexpr (P == lapis::Precision::tf32)  // the ring read as it is (truncated)
        run<WgmmaTiles<128, 6, 0, P>>(p);
      else
        run<HopperTiles<P>>(p);
    } else {
      std::fprintf(stderr, "wgmma tiles take linear layers only\n");
      std::exit(2);
    }
  }
  else if (shape == "paired" || shape == "paired_deep") {  // 16-byte fragment reads (linear)
    if constexpr (WeightRows) {
      if (shape == "paired")
        run<GemmTiles<128, 128, 64, 32, 16, 2, 2, true, P, false, true>>(p);
      else  // k steps of 32, odd rows' halves swapped
        run<GemmTiles<128, 64, 64, 32, 32, 3, 2, true, P, false, true>>(p);
    } else {
      std::fprintf(stderr, "paired tiles take linear layers only\n");
      std::exit(2);
    }
  }
  else
    run<GemmTiles<64, 64, 32, 32, 16, 2, 4, WeightRows, P>>(p);
}

std::vector<float> read(const std::string& path, size_t count) {
  std::vector<float> data(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(data.data()), count * sizeof(float));
  if (!in) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", count, path.c_str());
    std::exit(1);
  }
  return data;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr,
                 "usage: %s linear|rounded|residual|matmul|rows|rows_rounded|bf16_out "
                 "large|narrow|deep|staged|paired|paired_deep|wgmma|wgmma_wide|wgmma_direct|"
                 "wgmma_tma|wgmma_rounded|plain|small fp32|tf32|bf16 M N K ACTIVATION INIT DIR\n",
                 argv[0]);
    return 2;
  }
  Kokkos::ScopeGuard guard(argc, argv);
  const std::string kind = argv[1], shape = argv[2], precision = argv[3], dir = argv[9];
  const int m = std::atoi(argv[4]), n = std::atoi(argv[5]), k = std::atoi(argv[6]);
  const auto activation = lapis::Activation(std::atoi(argv[7]));
  const auto init = lapis::ConvInit(std::atoi(argv[8]));
  const bool linear = kind != "matmul";
  const bool residual = kind == "residual";  // linear, c.bin added before the activation
  const std::vector<float> a = read(dir + "/a.bin", size_t(m) * k);
  const std::vector<float> b = read(dir + "/b.bin", size_t(n) * k);
  const std::vector<float> bias = read(dir + "/bias.bin", n);
  std::vector<float> c = read(dir + "/c.bin", size_t(m) * n);
  const std::vector<float> added = c;
  if (init != lapis::ConvInit::accumulate)
    for (float& v : c) v = std::nanf("");
  const bool round_output = kind == "rounded" || kind == "rows_rounded";
  const GemmProblem p{a.data(), b.data(), c.data(), bias.data(), k, linear ? k : n, n, 0, 0, 0,
                      m, n, k, 1, init, activation, residual ? added.data() : nullptr,
                      residual ? n : 0, shape == "wgmma_rounded", round_output};
  if (precision == "bf16") {  // bfloat16 operands: Bf16HopperTiles, or linear<host, bf16>
    std::vector<lapis::bfloat16> a16(a.size()), b16(b.size()), c16(c.size());
    for (size_t i = 0; i < a.size(); ++i) a16[i] = lapis::to_bfloat16(a[i]);
    for (size_t i = 0; i < b.size(); ++i) b16[i] = lapis::to_bfloat16(b[i]);
    const bool half = kind == "bf16_out";
    for (size_t i = 0; i < c.size(); ++i) c16[i] = lapis::to_bfloat16(c[i]);  // NaN stays NaN
    GemmProblem q = p;
    q.a = q.b = nullptr;
    q.a16 = a16.data();
    q.b16 = b16.data();
    if (half) {
      q.c = nullptr;
      q.c16 = c16.data();
    }
    if (shape == "wgmma") {
      run<lapis::detail::Bf16HopperTiles>(q);
    } else {
      using Host = Kokkos::DefaultHostExecutionSpace;
      using Matrix16 = Kokkos::View<lapis::bfloat16**, Kokkos::LayoutRight, Kokkos::HostSpace,
                                    Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      using Matrix = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace,
                                  Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      const Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>
          bias_view(bias.data(), n);
      const Matrix16 x(a16.data(), m, k), w(b16.data(), n, k);
      const Matrix added_view =
          residual ? Matrix(const_cast<float*>(added.data()), m, n) : Matrix();
      if (half)
        lapis::linear<Host, lapis::Precision::bf16>(Host(), "plain", x, w, bias_view,
                                                    added_view, Matrix16(c16.data(), m, n), init,
                                                    activation);
      else
        lapis::linear<Host, lapis::Precision::bf16>(Host(), "plain", x, w, bias_view,
                                                    added_view, Matrix(c.data(), m, n), init,
                                                    activation);
      Kokkos::fence();
    }
    if (half)
      for (size_t i = 0; i < c.size(); ++i) c[i] = lapis::to_float(c16[i]);
  } else if (kind == "rows" || kind == "rows_rounded") {
    // linear_rows (a regression head) on the host's execution space
    using Matrix = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace,
                                Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>
        bias_view(bias.data(), n);
    lapis::detail::linear_rows(Kokkos::DefaultHostExecutionSpace(), "rows",
                               Matrix(const_cast<float*>(a.data()), m, k),
                               Matrix(const_cast<float*>(b.data()), n, k), bias_view,
                               Matrix(c.data(), m, n), init, activation, round_output);
    Kokkos::fence();
  } else if (linear && precision == "fp32")
    dispatch<true, lapis::Precision::fp32>(shape, p);
  else if (linear)
    dispatch<true, lapis::Precision::tf32>(shape, p);
  else if (precision == "fp32")
    dispatch<false, lapis::Precision::fp32>(shape, p);
  else
    dispatch<false, lapis::Precision::tf32>(shape, p);
  std::ofstream out(dir + "/out.bin", std::ios::binary);
  out.write(reinterpret_cast<const char*>(c.data()), c.size() * sizeof(float));
  return out ? 0 : 1;
}

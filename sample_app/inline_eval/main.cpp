// A simulation's own kernel calling an exported model per cell (lapis-export --evaluator):
// a periodic 2-D field, a 5-point stencil giving each cell three features, and an MLP turning
// them into two values per cell. Four ways to the same outputs:
//   thread  one kernel: stencil and inline_mlp::Evaluator per cell, weights in memory_space
//   team    one kernel: a team per grid row stages the weights in scratch (Evaluator::stage),
//           its threads run stencil and evaluator per cell
//   rows    the stencil's features in a View, then a team per grid row calls
//           Evaluator(team, count, features, outputs) on the row's cells
//   forward the stencil's features in a View, then the batched forward() over all cells
//
//   inline_eval check N DIR      writes DIR/<model>_<variant>.bin (features and outputs,
//                                row-major, the model's element type) for both models (the
//                                float32 one alone in a build without inline_mlp64)
//   inline_eval bench N REPEATS  times the four on the float32 model: a Markdown table
#include <inline_mlp.hpp>
#ifdef LAPIS_INLINE_EVAL_FLOAT64     // the CMake build defines it when it has inline_mlp64
#include <inline_mlp64.hpp>
#endif

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// A named namespace, and plain functions for forward() rather than lambdas: nvcc cannot name
// a device lambda's enclosing class when that class is in an anonymous namespace or is a
// template over a host lambda's type.
namespace inline_eval_app {

using execution_space = inline_mlp::execution_space;
using memory_space = inline_mlp::memory_space;

template <class Scalar>
struct Stencil {
  Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space> u;
  int n;

  // u, its 5-point Laplacian and its central difference along j, at (i, j) of the periodic grid.
  KOKKOS_INLINE_FUNCTION void features(const int i, const int j, Scalar* f) const {
    const int up = i == 0 ? n - 1 : i - 1, down = i == n - 1 ? 0 : i + 1;
    const int left = j == 0 ? n - 1 : j - 1, right = j == n - 1 ? 0 : j + 1;
    const Scalar c = u(i, j);
    f[0] = c;
    f[1] = u(up, j) + u(down, j) + u(i, left) + u(i, right) - Scalar(4) * c;
    f[2] = Scalar(0.5) * (u(i, right) - u(i, left));
  }
};

template <class Scalar>
Stencil<Scalar> make_field(const int n) {
  Stencil<Scalar> stencil{Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>("u", n, n), n};
  const auto u = stencil.u;
  Kokkos::parallel_for(
      "inline_eval::field", Kokkos::RangePolicy<execution_space>(0, int64_t(n) * n),
      KOKKOS_LAMBDA(const int64_t cell) {
        const int i = int(cell / n), j = int(cell % n);
        const double x = 6.283185307179586 * i / n, y = 6.283185307179586 * j / n;
        const double ripple = 0.1 * ((i * 7 + j * 13) % 17) / 17.0;
        u(i, j) = Scalar(lapis::math::sin(x) * lapis::math::cos(2 * y) + ripple);
      });
  return stencil;
}

template <class Scalar>
using Table = Kokkos::View<Scalar**, Kokkos::LayoutRight, memory_space>;

// The four variants of one model (see the top of the file), each a callable running once.
template <class Scalar, class Evaluator, class Forward>
struct Variants {
  static constexpr int F = Evaluator::input0_size;
  static constexpr int O = Evaluator::output0_size;
  Stencil<Scalar> stencil;
  Evaluator model;
  Forward forward;
  Table<Scalar> features, thread_out, team_out, rows_out, forward_out;

  Variants(const int n, const Evaluator& evaluator, Forward batched)
      : stencil(make_field<Scalar>(n)), model(evaluator), forward(batched),
        features("features", int64_t(n) * n, F), thread_out("thread", int64_t(n) * n, O),
        team_out("team", int64_t(n) * n, O), rows_out("rows", int64_t(n) * n, O),
        forward_out("forward", int64_t(n) * n, O) {
    static_assert(F == 3, "the stencil gives three features per cell");
  }

  void thread() const {
    const auto grid = stencil;
    const auto evaluate = model;
    const auto out = thread_out;
    const int n = grid.n;
    Kokkos::parallel_for(
        "inline_eval::thread", Kokkos::RangePolicy<execution_space>(0, int64_t(n) * n),
        KOKKOS_LAMBDA(const int64_t cell) {
          Scalar f[F], y[O];
          grid.features(int(cell / n), int(cell % n), f);
          evaluate(f, y);
          for (int k = 0; k < O; ++k) out(cell, k) = y[k];
        });
  }

  void team() const {
    using policy = Kokkos::TeamPolicy<execution_space>;
    const auto grid = stencil;
    const auto evaluate = model;
    const auto out = team_out;
    const int n = grid.n;
    const policy teams =
        policy(n, Kokkos::AUTO).set_scratch_size(0, Kokkos::PerTeam(Evaluator::team_shmem_size()));
    Kokkos::parallel_for(
        "inline_eval::team", teams, KOKKOS_LAMBDA(const typename policy::member_type& member) {
          const int i = member.league_rank();
          const auto staged = evaluate.stage(member);
          Kokkos::parallel_for(Kokkos::TeamThreadRange(member, n), [&](const int j) {
            Scalar f[F], y[O];
            grid.features(i, j, f);
            staged(f, y);
            for (int k = 0; k < O; ++k) out(int64_t(i) * n + j, k) = y[k];
          });
        });
  }

  void stencil_features() const {
    const auto grid = stencil;
    const auto table = features;
    const int n = grid.n;
    Kokkos::parallel_for(
        "inline_eval::stencil", Kokkos::RangePolicy<execution_space>(0, int64_t(n) * n),
        KOKKOS_LAMBDA(const int64_t cell) {
          Scalar f[F];
          grid.features(int(cell / n), int(cell % n), f);
          for (int k = 0; k < F; ++k) table(cell, k) = f[k];
        });
  }

  void rows() const {
    using policy = Kokkos::TeamPolicy<execution_space>;
    stencil_features();
    const auto evaluate = model;
    const auto in = features;
    const auto out = rows_out;
    const int n = stencil.n;
    const policy teams =
        policy(n, Kokkos::AUTO).set_scratch_size(0, Kokkos::PerTeam(Evaluator::team_shmem_size()));
    Kokkos::parallel_for(
        "inline_eval::rows", teams, KOKKOS_LAMBDA(const typename policy::member_type& member) {
          const int64_t first = int64_t(member.league_rank()) * n;
          evaluate(member, n, &in(first, 0), &out(first, 0));
        });
  }

  void batched() const {
    stencil_features();
    forward(features, forward_out);
  }
};

template <class Scalar, class Evaluator, class Forward>
Variants<Scalar, Evaluator, Forward> make_variants(const int n, const Evaluator& evaluator,
                                                   Forward forward) {
  return Variants<Scalar, Evaluator, Forward>(n, evaluator, forward);
}

template <class View>
void write(const std::string& path, const View& view) {
  const auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file || std::fwrite(host.data(), sizeof(*host.data()), host.size(), file) != host.size()) {
    std::fprintf(stderr, "inline_eval: cannot write %s\n", path.c_str());
    std::exit(1);
  }
  std::fclose(file);
}

template <class V>
void check(const V& variants, const std::string& prefix) {
  variants.thread();
  variants.team();
  variants.rows();
  variants.batched();
  Kokkos::fence();
  write(prefix + "_features.bin", variants.features);
  write(prefix + "_thread.bin", variants.thread_out);
  write(prefix + "_team.bin", variants.team_out);
  write(prefix + "_rows.bin", variants.rows_out);
  write(prefix + "_forward.bin", variants.forward_out);
}

// Median milliseconds of `repeats` runs of `run` (each fenced), after two warm-up runs.
template <class Run>
double median_ms(const Run& run, const int repeats) {
  for (int k = 0; k < 2; ++k) run();
  Kokkos::fence();
  std::vector<double> times;
  for (int k = 0; k < repeats; ++k) {
    Kokkos::Timer timer;
    run();
    Kokkos::fence();
    times.push_back(timer.seconds() * 1e3);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// max |variant - forward()| / max |forward()| over every output.
template <class Table>
double difference(const Table& ours, const Table& batched) {
  const auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ours);
  const auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), batched);
  double most = 0, scale = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    most = std::max(most, std::abs(double(a.data()[k]) - double(b.data()[k])));
    scale = std::max(scale, std::abs(double(b.data()[k])));
  }
  return scale > 0 ? most / scale : most;
}

template <class V>
void bench(const V& variants, const int n, const int repeats) {
  const double thread = median_ms([&] { variants.thread(); }, repeats);
  const double team = median_ms([&] { variants.team(); }, repeats);
  const double rows = median_ms([&] { variants.rows(); }, repeats);
  const double batched = median_ms([&] { variants.batched(); }, repeats);
  const double stencil = median_ms([&] { variants.stencil_features(); }, repeats);
  std::printf("| variant (%dx%d cells, %s) | median ms | vs stencil + forward |\n", n, n,
              execution_space::name());
  std::printf("|---|---|---|\n");
  std::printf("| stencil + inline MLP, per thread (Evaluator) | %.3f | %.2fx |\n", thread,
              batched / thread);
  std::printf("| stencil + inline MLP, per team, weights in scratch (Evaluator::stage) | %.3f | "
              "%.2fx |\n", team, batched / team);
  std::printf("| stencil to a View, then Evaluator(team, count, ...) per grid row | %.3f | "
              "%.2fx |\n", rows, batched / rows);
  std::printf("| stencil to a View, then batched forward() | %.3f | 1.00x |\n", batched);
  std::printf("| (the stencil to a View alone) | %.3f | |\n", stencil);
  std::printf("\nmax |variant - forward()| / max |forward()|: thread %.2e, team %.2e, rows %.2e\n",
              difference(variants.thread_out, variants.forward_out),
              difference(variants.team_out, variants.forward_out),
              difference(variants.rows_out, variants.forward_out));
}

void forward32(const Table<float>& x, const Table<float>& y) { inline_mlp::forward(x, y); }
#ifdef LAPIS_INLINE_EVAL_FLOAT64
void forward64(const Table<double>& x, const Table<double>& y) { inline_mlp64::forward(x, y); }
#endif

}  // namespace inline_eval_app

int main(int argc, char* argv[]) {
  if (argc != 4 || (std::string(argv[1]) != "check" && std::string(argv[1]) != "bench")) {
    std::fprintf(stderr, "usage: inline_eval check N DIR | inline_eval bench N REPEATS\n");
    return 2;
  }
  const std::string mode = argv[1];
  const int n = std::atoi(argv[2]);
  Kokkos::initialize(argc, argv);
  {
    inline_mlp::initialize();
#ifdef LAPIS_INLINE_EVAL_FLOAT64
    inline_mlp64::initialize();
#endif
    {
      using namespace inline_eval_app;
      const auto f32 = make_variants<float>(n, inline_mlp::evaluator(), &forward32);
      if (mode == "check") {
        check(f32, std::string(argv[3]) + "/inline_mlp");
#ifdef LAPIS_INLINE_EVAL_FLOAT64
        const auto f64 = make_variants<double>(n, inline_mlp64::evaluator(), &forward64);
        check(f64, std::string(argv[3]) + "/inline_mlp64");
#endif
      } else {
        bench(f32, n, std::atoi(argv[3]));
      }
    }
#ifdef LAPIS_INLINE_EVAL_FLOAT64
    inline_mlp64::finalize();
#endif
    inline_mlp::finalize();
  }
  Kokkos::finalize();
  return 0;
}

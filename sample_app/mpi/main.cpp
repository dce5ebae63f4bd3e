// mpi_app: each rank of an MPI program runs an exported model on its own slice of a batch, as
// a domain-decomposed simulation does with its cells or particles. Every rank initializes
// Kokkos (the host's) and the model, and calls NAME::forward on its own Views.
//
//   mpirun -np R mpi_app --input in.bin --output out.bin
//
// For a model with one float32 input and one float32 output whose first dimension is the
// batch, B at export: in.bin holds R * B samples (raw float32, row-major). Rank 0 reads it and
// scatters B samples to each rank; rank r runs samples [r * B, (r + 1) * B), writes its result
// to out.bin.rank<r>, and rank 0 gathers every rank's result into out.bin.
#include <mpi.h>

#include <Kokkos_Core.hpp>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "model_io.hpp"
#include LAPIS_MODEL_HEADER

namespace model = LAPIS_MODEL;

#define LAPIS_STRINGIFY2(x) #x
#define LAPIS_STRINGIFY(x) LAPIS_STRINGIFY2(x)

static_assert(model::num_inputs == 1 && model::num_outputs == 1,
              "mpi_app drives models with one input and one output");
static_assert(std::is_same_v<model::input0_view::non_const_value_type, float> &&
                  std::is_same_v<model::output0_view::non_const_value_type, float>,
              "mpi_app drives float32 models");

namespace {

struct Options {
  std::string input, output;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--kokkos", 0) == 0) continue;   // Kokkos' own options
    if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
    if (arg == "--input") options.input = argv[++i];
    else if (arg == "--output") options.output = argv[++i];
    else throw std::runtime_error("unknown argument " + arg);
  }
  if (options.input.empty() || options.output.empty())
    throw std::runtime_error("usage: mpirun -np R mpi_app --input in.bin --output out.bin");
  return options;
}

// This rank's share: scatter the global input, run the model, gather the outputs on rank 0.
void run(const Options& options, int rank, int ranks) {
  const size_t in_count = sample::element_count(model::input0_extents);
  const size_t out_count = sample::element_count(model::output0_extents);
  const int64_t batch = model::input0_extents[0];

  std::vector<float> global_input;
  if (rank == 0) global_input = sample::read_floats(options.input, in_count * size_t(ranks));
  std::vector<float> local_input(in_count);
  MPI_Scatter(global_input.data(), int(in_count), MPI_FLOAT, local_input.data(), int(in_count),
              MPI_FLOAT, 0, MPI_COMM_WORLD);

  model::initialize();
  std::vector<float> local_output;
  {
    auto x = sample::make_view<model::input0_view::non_const_type>("x", model::input0_extents);
    auto y = sample::make_view<model::output0_view>("y", model::output0_extents);
    sample::copy_in(x, local_input.data());
    model::forward(x, y);
    local_output = sample::copy_out(y);   // waits for forward's kernels
  }
  model::finalize();

  sample::write_floats(options.output + ".rank" + std::to_string(rank), local_output.data(),
                       out_count);
  std::printf("rank %d of %d: samples %lld to %lld on %s with %d thread(s)\n", rank, ranks,
              static_cast<long long>(rank * batch), static_cast<long long>((rank + 1) * batch - 1),
              model::execution_space::name(), model::execution_space().concurrency());
  std::fflush(stdout);

  std::vector<float> global_output(rank == 0 ? out_count * size_t(ranks) : 0);
  MPI_Gather(local_output.data(), int(out_count), MPI_FLOAT, global_output.data(),
             int(out_count), MPI_FLOAT, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    sample::write_floats(options.output, global_output.data(), global_output.size());
    std::printf("model %s: %d ranks x %lld samples, gathered into %s\n",
                LAPIS_STRINGIFY(LAPIS_MODEL), ranks, static_cast<long long>(batch),
                options.output.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  Kokkos::initialize(argc, argv);
  int status = 0;
  try {
    run(parse(argc, argv), rank, ranks);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_app rank %d: %s\n", rank, e.what());
    status = 1;
  }
  Kokkos::finalize();
  if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
  MPI_Finalize();
  return 0;
}

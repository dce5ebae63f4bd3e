// mpi_app: each rank of an MPI program runs an exported model on its own slice of a batch, as
// a domain-decomposed simulation does with its cells or particles. Every rank picks a device
// from its rank on the node, initializes Kokkos there, loads the model and calls NAME::forward
// on Views in the model's memory space.
//
//   mpirun -np R mpi_app --input in.bin --output out.bin [--steps N] [--warmup W] [--devices D]
//
// For a model with one float32 input and one float32 output whose first dimension is the
// batch, B at export: in.bin holds R * B samples (raw float32, row-major). Rank 0 reads it and
// scatters B samples to each rank; rank r runs samples [r * B, (r + 1) * B), writes its result
// to out.bin.rank<r>, and rank 0 gathers every rank's result into out.bin.
//
// Devices: node-local rank l takes device l % D, D being --devices or else, on CUDA, every
// device the rank sees (on a host backend, one per rank of the node: the id is reported, not
// used). KOKKOS_DEVICE_ID, when set, is taken instead. Each rank prints the device it runs on
// and its forward time per step (median of N, fenced; the ranks start each step together).
#include <mpi.h>

#include <Kokkos_Core.hpp>
#if defined(KOKKOS_ENABLE_CUDA)
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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
  int steps = 1, warmup = 0;
  int devices = 0;  // 0: every device the rank sees
};

int parse_count(const std::string& option, const std::string& text) {
  size_t end = 0;
  int value = -1;
  try {
    value = std::stoi(text, &end);
  } catch (const std::exception&) {
  }
  if (end != text.size() || value < 0)
    throw std::runtime_error(option + " needs a non-negative whole number, got '" + text + "'");
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    // Kokkos is initialized from settings, to give it the device: its own options would be
    // ignored, its environment variables are not.
    if (arg.rfind("--kokkos", 0) == 0)
      throw std::runtime_error(arg + ": mpi_app sets up Kokkos itself; use Kokkos' environment "
                               "variables (KOKKOS_NUM_THREADS, KOKKOS_DEVICE_ID, ...) instead");
    if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
    const std::string value = argv[++i];
    if (arg == "--input") options.input = value;
    else if (arg == "--output") options.output = value;
    else if (arg == "--steps") options.steps = parse_count(arg, value);
    else if (arg == "--warmup") options.warmup = parse_count(arg, value);
    else if (arg == "--devices") options.devices = parse_count(arg, value);
    else throw std::runtime_error("unknown argument " + arg);
  }
  if (options.input.empty() || options.output.empty())
    throw std::runtime_error("usage: mpirun -np R mpi_app --input in.bin --output out.bin "
                             "[--steps N] [--warmup W] [--devices D]");
  if (options.steps < 1) throw std::runtime_error("--steps must be at least 1");
  return options;
}

#if defined(KOKKOS_ENABLE_CUDA)
void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(status));
}
#endif

// Where this rank runs: its rank among the ranks of its node (those that share memory with
// it), and the device that rank maps to.
struct Placement {
  int local_rank = 0, local_ranks = 1;
  int device = 0, devices = 1;
};

Placement place(const Options& options, int rank) {
  Placement where;
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &where.local_rank);
  MPI_Comm_size(node, &where.local_ranks);
  MPI_Comm_free(&node);
#if defined(KOKKOS_ENABLE_CUDA)
  // Before Kokkos is initialized: counting devices creates no context.
  int visible = 0;
  check_cuda(cudaGetDeviceCount(&visible), "cudaGetDeviceCount");
  if (options.devices > visible)
    throw std::runtime_error("--devices " + std::to_string(options.devices) + ": only " +
                             std::to_string(visible) + " CUDA device(s) visible");
  where.devices = options.devices > 0 ? options.devices : visible;
#else
  // No device runtime to ask (host backends; HIP and SYCL check the id in Kokkos::initialize).
  where.devices = options.devices > 0 ? options.devices : where.local_ranks;
#endif
  where.device = where.local_rank % where.devices;
  // Kokkos 3.4 refuses a device id that differs from KOKKOS_DEVICE_ID; let the user's win.
  if (const char* chosen = std::getenv("KOKKOS_DEVICE_ID"))
    where.device = parse_count("KOKKOS_DEVICE_ID", chosen);
  return where;
}

void initialize_kokkos(int device) {
#if KOKKOS_VERSION >= 30700
  Kokkos::initialize(Kokkos::InitializationSettings().set_device_id(device));
#else
  Kokkos::InitArguments arguments;
  arguments.device_id = device;
  Kokkos::initialize(arguments);
#endif
}

// The device the model runs on, as this rank's line reports it.
std::string describe_device(const Placement& where) {
  char text[512];
#if defined(KOKKOS_ENABLE_CUDA)
  if constexpr (std::is_same_v<model::execution_space, Kokkos::Cuda>) {
    int device = -1;
    cudaDeviceProp properties;
    char bus_id[32] = "";
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");  // the device Kokkos made current
    check_cuda(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
    check_cuda(cudaDeviceGetPCIBusId(bus_id, int(sizeof(bus_id)), device),
               "cudaDeviceGetPCIBusId");
    std::snprintf(text, sizeof(text), "CUDA device %d of %d: %s, PCI %s", device, where.devices,
                  properties.name, bus_id);
    return text;
  }
#endif
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, model::memory_space>::accessible)
    std::snprintf(text, sizeof(text), "device %d of %d not used: %s runs on the host with %d "
                  "thread(s)", where.device, where.devices, model::execution_space::name(),
                  model::execution_space().concurrency());
  else
    std::snprintf(text, sizeof(text), "%s device %d of %d", model::execution_space::name(),
                  where.device, where.devices);
  return text;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
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
  std::vector<double> times;
  {
    // In the model's memory space (the device's, on a device backend); copy_in and copy_out
    // go through host mirrors.
    auto x = sample::make_view<model::input0_view::non_const_type>("x", model::input0_extents);
    auto y = sample::make_view<model::output0_view>("y", model::output0_extents);
    sample::copy_in(x, local_input.data());
    for (int step = 0; step < options.warmup + options.steps; ++step) {
      MPI_Barrier(MPI_COMM_WORLD);  // the ranks' steps overlap, as a simulation's do
      const auto start = std::chrono::steady_clock::now();
      model::forward(x, y);
      Kokkos::fence();
      const std::chrono::duration<double, std::milli> elapsed =
          std::chrono::steady_clock::now() - start;
      if (step >= options.warmup) times.push_back(elapsed.count());
    }
    local_output = sample::copy_out(y);
  }
  model::finalize();

  sample::write_floats(options.output + ".rank" + std::to_string(rank), local_output.data(),
                       out_count);
  const double median_ms = median(times);
  std::printf("rank %d of %d: samples %lld to %lld on %s, forward median_ms=%.4f min_ms=%.4f "
              "of %d step(s)\n", rank, ranks, static_cast<long long>(rank * batch),
              static_cast<long long>((rank + 1) * batch - 1), model::execution_space::name(),
              median_ms, *std::min_element(times.begin(), times.end()), options.steps);
  std::fflush(stdout);

  double slowest_ms = 0;
  MPI_Reduce(&median_ms, &slowest_ms, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  std::vector<float> global_output(rank == 0 ? out_count * size_t(ranks) : 0);
  MPI_Gather(local_output.data(), int(out_count), MPI_FLOAT, global_output.data(),
             int(out_count), MPI_FLOAT, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    sample::write_floats(options.output, global_output.data(), global_output.size());
    std::printf("model %s: %d ranks x %lld samples, gathered into %s; slowest rank's forward "
                "median_ms=%.4f\n", LAPIS_STRINGIFY(LAPIS_MODEL), ranks,
                static_cast<long long>(batch), options.output.c_str(), slowest_ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  // Mistakes in the command line or the device count: every rank stops before Kokkos starts,
  // and the lowest rank that failed says why, once.
  Options options;
  Placement where;
  std::string error;
  try {
    options = parse(argc, argv);
    where = place(options, rank);
  } catch (const std::exception& e) {
    error = e.what();
  }
  int first_failed = error.empty() ? ranks : rank;
  MPI_Allreduce(MPI_IN_PLACE, &first_failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first_failed < ranks) {
    if (rank == first_failed) std::fprintf(stderr, "mpi_app: %s\n", error.c_str());
    MPI_Finalize();
    return 1;
  }

  initialize_kokkos(where.device);
  int status = 0;
  try {
    std::printf("rank %d of %d: node-local rank %d of %d, %s\n", rank, ranks, where.local_rank,
                where.local_ranks, describe_device(where).c_str());
    std::fflush(stdout);
    run(options, rank, ranks);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_app rank %d: %s\n", rank, e.what());
    status = 1;
  }
  Kokkos::finalize();
  // A rank that failed may leave the others waiting in a collective: stop them all.
  if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
  MPI_Finalize();
  return 0;
}

// lammps_md: molecular dynamics in LAMMPS with the forces of an exported neural potential.
// LAMMPS (its C library interface) owns the atoms, the periodic box, the neighbour list and the
// velocity Verlet integrator; `fix external` calls back into this program for the forces, the
// energy and the virial, which come from the model's forward() and the gradient of its energy
// with respect to the positions (a package exported with `--grad 0:positions`). See README.md.
//
//   lammps_md [--steps N] [--cells C] [--lattice A] [--temperature T] [--timestep DT]
//             [--thermo K] [--seed S] [--cutoff RC] [--jitter D] [--scale SX,SY,SZ]
//             [--dump FILE]
#include <Kokkos_Core.hpp>

#include <library.h>  // LAMMPS' C library interface

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include LAPIS_MODEL_HEADER

namespace model = LAPIS_MODEL;

namespace {

static_assert(model::num_inputs == 3 && model::num_outputs == 2,
              "the host calls forward(positions, edge_index, local_mask, energy, gradient): "
              "export the potential with --grad 0:positions");
using scalar = std::remove_const_t<typename model::input0_view::value_type>;
using memory = model::memory_space;
using positions_view = Kokkos::View<scalar**, Kokkos::LayoutRight, memory>;
using edges_view = Kokkos::View<int64_t**, Kokkos::LayoutLeft, memory>;  // [E][2]: [2, E] row-major
using mask_view = Kokkos::View<scalar*, Kokkos::LayoutRight, memory>;
using energy_view = Kokkos::View<scalar, Kokkos::LayoutRight, memory>;

// LAMMPS stores neighbour indices with special-bond bits on top (none here; masked anyway).
constexpr int neighbour_mask = 0x1FFFFFFF;

struct Settings {
  long steps = 1000;
  int cells = 3;               // fcc unit cells per side: 4 C^3 atoms
  double lattice = 4.0;        // Angstrom
  double temperature = 300.0;  // K
  double timestep = 0.001;     // ps (1 fs)
  int thermo = 10;
  int seed = 12345;
  double cutoff = 5.0;         // Angstrom: the model's cutoff
  double jitter = 0.0;         // Angstrom: random displacements off the lattice sites
  double scale[3] = {1, 1, 1}; // of the box edges x, y, z, atoms remapped (pressure checks)
  std::string dump;            // the model's inputs and the forces at step 0
};

// What the callback needs between calls: LAMMPS, the settings, and the model's Views
// (reallocated only when the number of atoms or of pairs changes).
struct Host {
  void* lammps = nullptr;
  Settings settings;
  positions_view positions;
  edges_view edges;
  mask_view local_mask;
  energy_view energy{"energy"};
  positions_view gradient;
  std::vector<int> local_of_tag;
  bool dumped = false;
};

template <class View, class... Sizes>
void fit(View& view, const char* label, size_t rows, Sizes... sizes) {
  if (view.label() == label && view.extent(0) == rows) return;
  view = View(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)), rows,
              sizes...);
}

void write_dump(const Host& host, int nlocal, const std::vector<int64_t>& tags,
                const double* const* forces, double energy, const double* virial);

// The forces, energy and virial of the model for the atoms as they are now. `x` and `tag` hold
// the nlocal owned atoms, then the ghosts; `forces` is filled for the owned atoms.
void compute(Host& host, int64_t step, int nlocal, const int* tag, const double* const* x,
             double** forces) {
  void* lmp = host.lammps;
  const int nghost = lammps_extract_setting(lmp, "nghost");
  const int atoms = nlocal + nghost;

  // Pairs within the cutoff from pair_style zero's half list. With `newton off` it holds each
  // pair of owned atoms once and every owned-ghost pair, so adding the reverse of the owned
  // pairs gives each owned atom all its neighbours (a full list, centred on owned atoms).
  const int list = lammps_find_pair_neighlist(lmp, "zero", 1, 0, 0);
  if (list < 0) throw std::runtime_error("pair_style zero has no neighbour list");
  const int centres = lammps_neighlist_num_elements(lmp, list);
  const double cutoff_squared = host.settings.cutoff * host.settings.cutoff;
  std::vector<int64_t> centre, neighbour;
  for (int element = 0; element < centres; ++element) {
    int i = 0, count = 0;
    int* neighbours = nullptr;
    lammps_neighlist_element_neighbors(lmp, list, element, &i, &count, &neighbours);
    for (int n = 0; n < count; ++n) {
      const int j = neighbours[n] & neighbour_mask;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= cutoff_squared) continue;
      centre.push_back(i);
      neighbour.push_back(j);
      if (j < nlocal) {
        centre.push_back(j);
        neighbour.push_back(i);
      }
    }
  }
  const size_t pairs = centre.size();

  fit(host.positions, "positions", atoms, 3);
  fit(host.gradient, "gradient", atoms, 3);
  fit(host.local_mask, "local_mask", atoms);
  fit(host.edges, "edge_index", pairs, 2);
  auto positions = Kokkos::create_mirror_view(host.positions);
  auto local_mask = Kokkos::create_mirror_view(host.local_mask);
  auto edges = Kokkos::create_mirror_view(host.edges);
  for (int k = 0; k < atoms; ++k) {
    for (int a = 0; a < 3; ++a) positions(k, a) = static_cast<scalar>(x[k][a]);
    local_mask(k) = k < nlocal ? scalar(1) : scalar(0);
  }
  for (size_t e = 0; e < pairs; ++e) {
    edges(e, 0) = centre[e];
    edges(e, 1) = neighbour[e];
  }
  Kokkos::deep_copy(host.positions, positions);
  Kokkos::deep_copy(host.local_mask, local_mask);
  Kokkos::deep_copy(host.edges, edges);

  // edge_index is [2, E] row-major: the transpose of the [E][2] LayoutLeft View.
  Kokkos::View<const int64_t**, Kokkos::LayoutRight, memory> edge_index(
      static_cast<const int64_t*>(host.edges.data()), 2, pairs);
  model::forward(host.positions, edge_index, host.local_mask, host.energy, host.gradient);

  auto gradient = Kokkos::create_mirror_view(host.gradient);
  Kokkos::deep_copy(gradient, host.gradient);
  scalar energy = 0;
  Kokkos::deep_copy(energy, host.energy);

  // A ghost is a periodic image of an owned atom (one rank): its force goes to that atom. The
  // virial is LAMMPS' f.r sum over owned and ghost atoms at their own coordinates.
  int max_tag = 0;
  for (int k = 0; k < nlocal; ++k) max_tag = std::max(max_tag, tag[k]);
  host.local_of_tag.assign(max_tag + 1, -1);
  for (int k = 0; k < nlocal; ++k) host.local_of_tag[tag[k]] = k;
  for (int k = 0; k < nlocal; ++k) forces[k][0] = forces[k][1] = forces[k][2] = 0.0;
  double virial[6] = {0, 0, 0, 0, 0, 0};  // xx, yy, zz, xy, xz, yz
  for (int k = 0; k < atoms; ++k) {
    const int owner = tag[k] <= max_tag ? host.local_of_tag[tag[k]] : -1;
    if (owner < 0) throw std::runtime_error("a ghost whose atom is not on this rank");
    const double f[3] = {-double(gradient(k, 0)), -double(gradient(k, 1)),
                         -double(gradient(k, 2))};
    for (int a = 0; a < 3; ++a) forces[owner][a] += f[a];
    virial[0] += x[k][0] * f[0];
    virial[1] += x[k][1] * f[1];
    virial[2] += x[k][2] * f[2];
    virial[3] += x[k][0] * f[1];
    virial[4] += x[k][0] * f[2];
    virial[5] += x[k][1] * f[2];
  }
  lammps_fix_external_set_energy_global(lmp, "model", double(energy));
  lammps_fix_external_set_virial_global(lmp, "model", virial);

  if (step == 0 && !host.settings.dump.empty() && !host.dumped) {
    std::vector<int64_t> tags(tag, tag + atoms);
    write_dump(host, nlocal, tags, forces, double(energy), virial);
    host.dumped = true;
  }
}

// fix external's callback, once per step after LAMMPS' own (zero) pair forces. An error cannot
// return through LAMMPS' C interface: it ends the program.
void compute_forces(void* context, int64_t step, int nlocal, int* tag, double** x,
                    double** forces) {
  try {
    compute(*static_cast<Host*>(context), step, nlocal, tag, x, forces);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "lammps_md: step %lld: %s\n", static_cast<long long>(step),
                 error.what());
    std::exit(1);
  }
}

// The model's inputs and what came of them at step 0, for a check against PyTorch: int64
// atoms N, owned atoms n, pairs E; float64 positions [N, 3]; int64 edge_index [2, E]; float64
// local_mask [N]; int64 tags [N]; float64 forces [n, 3] (after the ghosts' are folded in);
// float64 energy; float64 virial [6]; float64 box lower and upper corners [2, 3]. All
// little-endian, row-major.
void write_dump(const Host& host, int nlocal, const std::vector<int64_t>& tags,
                const double* const* forces, double energy, const double* virial) {
  std::FILE* file = std::fopen(host.settings.dump.c_str(), "wb");
  if (!file) throw std::runtime_error("cannot write " + host.settings.dump);
  auto positions = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), host.positions);
  auto mask = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), host.local_mask);
  auto edges = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), host.edges);
  const int64_t counts[3] = {int64_t(positions.extent(0)), nlocal, int64_t(edges.extent(0))};
  std::fwrite(counts, sizeof(int64_t), 3, file);
  for (size_t k = 0; k < positions.extent(0); ++k)
    for (int a = 0; a < 3; ++a) {
      const double value = positions(k, a);
      std::fwrite(&value, sizeof(double), 1, file);
    }
  for (int row = 0; row < 2; ++row)
    for (size_t e = 0; e < edges.extent(0); ++e) std::fwrite(&edges(e, row), sizeof(int64_t), 1, file);
  for (size_t k = 0; k < mask.extent(0); ++k) {
    const double value = mask(k);
    std::fwrite(&value, sizeof(double), 1, file);
  }
  std::fwrite(tags.data(), sizeof(int64_t), tags.size(), file);
  for (int k = 0; k < nlocal; ++k) std::fwrite(forces[k], sizeof(double), 3, file);
  std::fwrite(&energy, sizeof(double), 1, file);
  std::fwrite(virial, sizeof(double), 6, file);
  double corners[6], xy, yz, xz;
  int periodic[3], changed;
  lammps_extract_box(host.lammps, corners, corners + 3, &xy, &yz, &xz, periodic, &changed);
  std::fwrite(corners, sizeof(double), 6, file);
  std::fclose(file);
}

Settings parse(int argc, char** argv) {
  Settings settings;
  for (int i = 1; i < argc; ++i) {
    const std::string option = argv[i];
    if (option.rfind("--kokkos-", 0) == 0) continue;  // Kokkos' own
    if (i + 1 >= argc) throw std::invalid_argument(option + " needs a value");
    const char* value = argv[++i];
    if (option == "--steps") settings.steps = std::atol(value);
    else if (option == "--cells") settings.cells = std::atoi(value);
    else if (option == "--lattice") settings.lattice = std::atof(value);
    else if (option == "--temperature") settings.temperature = std::atof(value);
    else if (option == "--timestep") settings.timestep = std::atof(value);
    else if (option == "--thermo") settings.thermo = std::atoi(value);
    else if (option == "--seed") settings.seed = std::atoi(value);
    else if (option == "--cutoff") settings.cutoff = std::atof(value);
    else if (option == "--jitter") settings.jitter = std::atof(value);
    else if (option == "--scale") {
      if (std::sscanf(value, "%lf,%lf,%lf", &settings.scale[0], &settings.scale[1],
                      &settings.scale[2]) != 3)
        throw std::invalid_argument("--scale takes SX,SY,SZ");
    }
    else if (option == "--dump") settings.dump = value;
    else throw std::invalid_argument("unknown option " + option);
  }
  return settings;
}

void command(void* lmp, const std::string& line) {
  lammps_command(lmp, line.c_str());
  if (lammps_has_error(lmp)) {
    char message[512];
    lammps_get_last_error_message(lmp, message, sizeof message);
    throw std::runtime_error(line + ": " + message);
  }
}

void simulate(Host& host) {
  const Settings& s = host.settings;
  const std::string cells = std::to_string(s.cells);
  for (const std::string& line : {
           std::string("units metal"), std::string("atom_style atomic"),
           std::string("boundary p p p"),
           // each owned-ghost pair in the half list, for the full list the model needs
           std::string("newton off"),
           "lattice fcc " + std::to_string(s.lattice),
           "region box block 0 " + cells + " 0 " + cells + " 0 " + cells,
           std::string("create_box 1 box"), std::string("create_atoms 1 box"),
           std::string("mass 1 39.948"),
       })
    command(host.lammps, line);
  char line[256];
  if (s.jitter > 0) {
    std::snprintf(line, sizeof line, "displace_atoms all random %.17g %.17g %.17g %d units box",
                  s.jitter, s.jitter, s.jitter, s.seed);
    command(host.lammps, line);
  }
  std::snprintf(line, sizeof line,
                "change_box all x scale %.17g y scale %.17g z scale %.17g remap", s.scale[0],
                s.scale[1], s.scale[2]);
  command(host.lammps, line);
  if (s.temperature > 0) {
    std::snprintf(line, sizeof line, "velocity all create %.17g %d mom yes rot yes dist gaussian",
                  s.temperature, s.seed);
    command(host.lammps, line);
  }
  // pair_style zero: no forces, only the neighbour list (cutoff plus the skin) we read.
  std::snprintf(line, sizeof line, "pair_style zero %.17g", s.cutoff);
  command(host.lammps, line);
  for (const std::string& line : {
           std::string("pair_coeff * *"), std::string("neighbor 1.0 bin"),
           std::string("neigh_modify every 1 delay 0 check yes"),
           std::string("fix model all external pf/callback 1 1"),
           // the model's energy in pe, its virial in the pressure
           std::string("fix_modify model energy yes virial yes"),
           std::string("fix integrate all nve"),
           // the pressure of the virial alone (no kinetic part), to check against -dE/dV
           std::string("compute virial_pressure all pressure NULL virial"),
           std::string("thermo_style custom step temp pe ke etotal press c_virial_pressure "
                       "c_virial_pressure[1] c_virial_pressure[2] c_virial_pressure[3] vol"),
           std::string("thermo_modify format float %.15g norm no"),
           "thermo " + std::to_string(s.thermo),
       })
    command(host.lammps, line);
  lammps_set_fix_external_callback(host.lammps, "model", compute_forces, &host);
  std::snprintf(line, sizeof line, "timestep %.17g", s.timestep);
  command(host.lammps, line);
  command(host.lammps, "run " + std::to_string(s.steps));
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);  // takes Kokkos' own --kokkos-... options out of argv
  int status = 0;
  {
    Host host;
    void* lmp = nullptr;
    try {
      host.settings = parse(argc, argv);
      const char* arguments[] = {"lammps_md", "-log", "none", "-nocite"};
      lmp = lammps_open_no_mpi(4, const_cast<char**>(arguments), nullptr);
      host.lammps = lmp;
      if (!lmp) throw std::runtime_error("LAMMPS did not start");
      // Ghost forces are folded onto the owned atoms by tag, which needs every owner on this
      // rank: one MPI rank (see README.md for more).
      if (lammps_extract_setting(lmp, "world_size") != 1)
        throw std::runtime_error("lammps_md runs on one MPI rank");
      model::initialize();
      simulate(host);
      std::printf("lammps_md: %s (%s), %.0f atoms, %ld steps\n", LAPIS_MODEL_NAME,
                  std::is_same<scalar, double>::value ? "float64" : "float32",
                  lammps_get_natoms(lmp), host.settings.steps);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "lammps_md: %s\n", error.what());
      status = 1;
    }
    if (lmp) lammps_close(lmp);
    model::finalize();
  }
  Kokkos::finalize();
  lammps_mpi_finalize();
  return status;
}

"""A small neural interatomic potential for the LAMMPS host: Gaussian radial features of each
atom's neighbours, a per-atom MLP, and a repulsive core, all under a smooth cosine cutoff.

    python3 sample_app/lammps/potential.py --out potential.pt2 [--dtype float64|float32]

writes a torch.export file with the number of atoms N and of pairs E dynamic, for
`lapis-export potential.pt2 --grad energy:positions ...` (see README.md).

forward(positions [N, 3], edge_index [2, E] int64, local_mask [N]) -> energy (0-d): for each
directed pair (i, j) = (edge_index[0, e], edge_index[1, e]) the distance d = |x_j - x_i|
contributes to the features of its centre atom i; atom i's energy is weighted by
local_mask[i] (1 for the atoms a domain owns, 0 for its ghost copies), so the energy of a
domain is that of its own atoms while the ghosts' positions still reach it through the pairs.
Units are LAMMPS' metal units: Angstrom and eV.
"""
from __future__ import annotations

import argparse
import math

import torch
from torch import nn

CUTOFF = 5.0          # Angstrom: the pairs the host passes lie within it
GAUSSIANS = 8
HIDDEN = 32
SEED = 0
# The repulsive core A exp(-d / B) per pair (eV, Angstrom): about 1 eV at 2.2 Angstrom, so
# atoms at a temperature of a few hundred K stay apart.
CORE_ENERGY = 120.0
CORE_LENGTH = 0.46
# Scale of the MLP's output (eV per atom): the many-body part, smaller than the core.
ATOMIC_SCALE = 0.05


def _cutoff(distance: torch.Tensor) -> torch.Tensor:
    """0.5 (cos(pi d / rc) + 1) inside rc, 0 beyond: the value and its slope reach 0 at rc, so
    energy and forces are continuous as pairs cross the cutoff."""
    inside = (distance < CUTOFF).to(distance.dtype)
    return 0.5 * (torch.cos(distance * (math.pi / CUTOFF)) + 1.0) * inside


class Potential(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float64):
        super().__init__()
        torch.manual_seed(SEED)
        self.mlp = nn.Sequential(nn.Linear(GAUSSIANS, HIDDEN), nn.SiLU(),
                                 nn.Linear(HIDDEN, HIDDEN), nn.SiLU(),
                                 nn.Linear(HIDDEN, 1))
        self.register_buffer("centres", torch.linspace(1.5, CUTOFF, GAUSSIANS))
        self.width = (CUTOFF - 1.5) / GAUSSIANS * 1.5
        self.to(dtype)

    def forward(self, positions: torch.Tensor, edge_index: torch.Tensor,
                local_mask: torch.Tensor) -> torch.Tensor:
        centre, neighbour = edge_index[0], edge_index[1]
        pair_vectors = positions.index_select(0, neighbour) - positions.index_select(0, centre)
        distance = torch.sqrt((pair_vectors * pair_vectors).sum(dim=1))
        smooth = _cutoff(distance)
        shells = (distance.unsqueeze(1) - self.centres) / self.width
        radial = torch.exp(-shells * shells) * smooth.unsqueeze(1)              # [E, 8]
        features = torch.zeros(positions.shape[0], GAUSSIANS, dtype=positions.dtype)
        features = features.index_add(0, centre, radial)                        # [N, 8]
        atomic = ATOMIC_SCALE * self.mlp(features).squeeze(1)                   # [N]
        # each pair appears in both directions: half of the core energy to each
        core = 0.5 * CORE_ENERGY * torch.exp(distance * (-1.0 / CORE_LENGTH)) * smooth
        atomic = atomic.index_add(0, centre, core)
        return (atomic * local_mask).sum()


def example_inputs(dtype: torch.dtype = torch.float64, atoms: int = 6, pairs: int = 10):
    """Valid inputs to trace with: positions in a box, pairs of distinct atoms, a mask."""
    generator = torch.Generator().manual_seed(1)
    positions = torch.rand(atoms, 3, generator=generator, dtype=dtype) * 6.0
    centre = torch.randint(0, atoms, (pairs,), generator=generator)
    neighbour = (centre + torch.randint(1, atoms, (pairs,), generator=generator)) % atoms
    local_mask = (torch.arange(atoms) < atoms // 2).to(dtype)
    return positions, torch.stack([centre, neighbour]), local_mask


def save(path, dtype: torch.dtype = torch.float64) -> Potential:
    """Export the potential with N and E dynamic (0 allowed) to `path`; returns the module."""
    model = Potential(dtype).eval()
    atoms = torch.export.Dim("atoms", min=0, max=1 << 24)
    pairs = torch.export.Dim("pairs", min=0, max=1 << 28)
    program = torch.export.export(model, example_inputs(dtype),
                                  dynamic_shapes=({0: atoms}, {1: pairs}, {0: atoms}))
    torch.export.save(program, str(path))
    return model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    arguments = parser.parse_args()
    save(arguments.out, getattr(torch, arguments.dtype))
    print(arguments.out)

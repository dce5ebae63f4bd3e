"""Emit stage: lowered MLIR (func/arith/math/memref/scf) -> Kokkos C++ source text."""
from .kokkos import BACKEND_SPACES, kokkos

__all__ = ["kokkos", "BACKEND_SPACES"]

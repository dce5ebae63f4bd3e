"""Fixtures shared by tests/ and integration_tests/."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kokkos_root() -> Path:
    """The Kokkos install every C++ build in the tests uses (built once into the cache)."""
    from kokkos_support.provision import ensure_kokkos
    return ensure_kokkos()

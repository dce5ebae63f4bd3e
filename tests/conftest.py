"""Fixtures shared by the unit tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kokkos_root() -> Path:
    from kokkos_support.provision import ensure_kokkos
    return ensure_kokkos()

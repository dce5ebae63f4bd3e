"""CMake and C++ templates rendered by the package stage (files under cmake/ and cpp/)."""

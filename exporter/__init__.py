"""lapis-export: compile PyTorch and ONNX models into Kokkos C++ CMake packages.

Pipeline (one direction, one module each): frontend -> importer -> lowering -> emit -> package,
plus verify (build the package, call it through ctypes, compare with the reference).
"""
__version__ = "0.1.0"

"""Typed hand-offs between pipeline stages (frontend -> importer -> lowering -> emit -> package)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Element types we carry through the pipeline, with their C++ spellings (bool travels as uint8_t
# through the C API, as DESIGN.md says).
CXX_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t",
             "bool": "bool"}
C_API_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t",
               "bool": "uint8_t"}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the user sees it."""
    name: str                 # name in the source model (graph input/output name)
    cname: str                # C identifier used in the generated API (input0, output0, ...)
    dtype: str                # key of CXX_TYPES
    shape: tuple[int, ...]    # -1 marks a dynamic dimension
    # Per dimension, the name of the size a dynamic dimension takes ("s0"; dimensions with the
    # same name always have the same size), None for a static one; () for a static shape.
    symbols: tuple[str | None, ...] = ()

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape

    def to_json(self) -> dict:
        data = {"name": self.name, "cname": self.cname, "dtype": self.dtype,
                "shape": list(self.shape)}
        if self.dynamic:
            data["symbols"] = list(self.symbols)
        return data


@dataclass(frozen=True)
class DynamicExtent:
    """A dynamic input dimension: one int64_t argument of the C API, in input order."""
    symbol: str               # the size's name, shared by every dimension of that size
    input: str                # cname of the input whose extent it is
    dim: int
    cname: str                # C identifier of the argument: input0_extent0


def dynamic_extents(inputs: list[TensorSpec]) -> list[DynamicExtent]:
    """The C API's leading size arguments: one per dynamic input dimension, in input order."""
    return [DynamicExtent(symbol=spec.symbols[dim] if spec.symbols else f"{spec.cname}.{dim}",
                          input=spec.cname, dim=dim,
                          cname=f"{spec.cname}_extent{dim}")
            for spec in inputs for dim, extent in enumerate(spec.shape) if extent < 0]


@dataclass
class LoadedModel:
    """frontend.load() result: a model program plus what the file says about its interface."""
    path: Path
    kind: str                           # "torchscript" | "torch.export" | "onnx" | "function"
    program: Any                        # torch.export.ExportedProgram (or onnx.ModelProto)
    inputs: list[TensorSpec]
    source_sha256: str
    # Python functions (kind "function"): the function itself, which --verify compares with,
    # and its optional `<name>_example_inputs()` (inputs --verify must use, e.g. valid indices).
    reference: Any = None
    example_inputs: Any = None
    # ONNX models: the graph outputs, read by the frontend (the importer finds a PyTorch
    # program's after decomposition).
    outputs: list[TensorSpec] | None = None
    # PyTorch programs whose outputs have names of their own (--grad's d_energy_d_positions).
    output_names: list[str] | None = None


@dataclass
class Weight:
    """A parameter/buffer/constant tensor held in the weight blob, referred to by name."""
    name: str                 # source name, e.g. "layer1.0.conv1.weight"
    cname: str                # C identifier, e.g. "layer1_0_conv1_weight"
    array: np.ndarray         # contiguous, little-endian


@dataclass
class ImportedModel:
    """importer.to_linalg() result: linalg-on-tensors IR whose function arguments are the
    weights (in `weights` order) followed by the user inputs."""
    module: Any               # torch_mlir.ir.Module
    weights: list[Weight]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: LoadedModel


@dataclass
class EmittedSource:
    """emit.kokkos() result: the generated C++ and what the package needs to ship with it."""
    name: str                 # namespace, CMake target, symbol prefix
    backend: str              # serial | openmp | threads | cuda | hip | sycl
    header: str               # text of include/NAME.hpp
    source: str               # text of src/NAME.cpp
    weights: list[Weight]     # in weight-blob order (the generated code indexes them so)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    op_counts: Counter = field(default_factory=Counter)   # lowered MLIR ops handled
    kernel_count: int = 0
    # The float32 products' precision (PRECISIONS): fp32 (float32 accuracy), tf32, bf16.
    precision: str = "fp32"
    # The header has NAME::Evaluator (--evaluator): the model inside a host's own kernels.
    evaluator: bool = False
    # Intermediate buffers' bytes with and without sharing by liveness (memory_plan.Plan.summary)
    memory: dict = field(default_factory=dict)


# --precision: what each mode's float32 matrix products are, as the header says it.
PRECISIONS = {
    "fp32": "float32 accuracy",
    "tf32": "TF32 tensor-core products (10-bit mantissas), float32 accumulation",
    "bf16": "bfloat16 products of linear layers and matrix products (operands rounded to "
            "nearest even), float32 accumulation; convolutions and other ops in float32",
}
# --precision bf16 as CUDA packages have it (lowering/linear.py bf16_linear_layers).
CUDA_BF16 = ("bfloat16 products of linear layers (their weights, and the activations only "
             "linear layers read, stored in bfloat16), float32 accumulation; other matrix "
             "products and attention in tf32; convolutions and other ops in float32")

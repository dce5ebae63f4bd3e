"""The Kokkos C++ emitter: walks the lowered function and writes forward()'s body.

One object owns the value -> C++ name scopes, the indentation and the output lines; one small
handler per op, registered in HANDLERS by the @handles decorator (handlers.py). Arithmetic and
math come from the tables in scalar_ops.py.
"""
from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from ..errors import ExportError
from ..names import c_identifier
from . import cxx_types

HANDLERS: dict[str, Callable[["KokkosEmitter", object], None]] = {}


def handles(*op_names: str):
    """Register a handler for the named ops."""
    def register(function):
        for op_name in op_names:
            HANDLERS[op_name] = function
        return function
    return register


@dataclass
class MemrefHandle:
    """A memref value as C++ sees it: a View named `cname` over memory owned by `root`."""
    cname: str
    root: str
    const: bool


@dataclass
class StateView:
    """A View member of the generated State struct (a weight or an intermediate buffer)."""
    cname: str
    element: str
    shape: tuple[int, ...]
    comment: str
    weight_index: int | None = None    # index in the weight blob, for weights
    weight_name: str = ""
    zeroed: bool = False               # filled with zeros in initialize() (a padding border)
    planned_in_forward: bool = False   # dynamic extents: (re)allocated by forward() on change
    split_of: str = ""                 # filled in initialize() from this weight's View
                                       # by lapis::split_tf32_weight
    storage: str = ""                  # a View of this block of storage (memory_plan.py)
    storage_offset: int = 0            # at this byte in it
    is_storage: bool = False           # a block of storage that buffers view


def location_label(op) -> str:
    """The source name an op carries (`layer1.0.conv1/convolution`), or '' if none."""
    text = str(op.location)
    for match in re.finditer(r'"([^"]+)"(?!:\d)', text):
        return match.group(1)
    return ""


class KokkosEmitter:
    def __init__(self, model_name: str, flat_ranges: bool = False):
        self.model_name = model_name
        # Loop nests as one flat RangePolicy (GPUs: full thread blocks whatever the extents)
        # instead of an MDRangePolicy (CPUs: the tiles keep the innermost loop contiguous).
        self.flat_ranges = flat_ranges
        self.lines: list[str] = []
        self.depth = 1
        self.values: dict = {}                 # SSA value -> C++ expression
        self.memrefs: dict = {}                # memref value -> MemrefHandle
        self.state_views: list[StateView] = []
        self.taken: set[str] = set()           # names in forward()'s scope
        self.labels: Counter = Counter()
        self.op_counts: Counter = Counter()
        self.kernel_count = 0
        self.in_kernel = False
        self.local_counter = 0
        self.yield_targets: list[list[str]] = []
        self.promoted: dict = {}   # (memref, index values) -> register variable (handlers._for)
        self.globals: dict[str, StateView] = {}   # memref.global symbol -> its weight View
        self.device_scalars: dict = {}   # SSA value -> rank-0 View holding it (handlers.py)
        self.host_copies: dict = {}      # SSA value -> its copy in forward()'s current scope
        self.reads_back = False          # forward() waits for a value from memory_space
        self.module = None
        # CUDA: 3x3-and-larger float32 convolution weights also split into tf32 mma fragments
        # (lapis::split_tf32_weight); packed weight's name -> the split View's name.
        self.split_conv_weights = False
        # The package's backend, and --precision: the products of the CUDA kernels (tf32)
        # and of the host backends' linear layers and matrix products (bf16).
        self.backend = "serial"
        self.precision = "fp32"
        self.split_weights: dict[str, str] = {}
        # --precision tf32 on CUDA: the weights rounded to tf32 at export (tuned_ops.read_as_tf32).
        self.tf32_weights: set[str] = set()
        # The support headers the emitted code calls into ("lapis/conv.hpp"): the source
        # includes these and no others.
        self.support_headers: set[str] = set()
        # Buffers sharing blocks of storage by liveness (memory_plan.plan; None: each its own).
        self.memory_plan = None

    def tuned_kernel(self, call: str, precisions: tuple[str, ...] = ("tf32",),
                     cuda_bf16_as: str | None = None) -> str:
        """`lapis::call<execution_space>`, with the precision as the second template argument
        when it is one of the kernel's `precisions` (the others compute in float32); on CUDA
        under bf16, `cuda_bf16_as` instead where given (kernels without bfloat16 tiles)."""
        mode = cuda_bf16_as if cuda_bf16_as and self.backend == "cuda" and \
            self.precision == "bf16" else self.precision
        precision = f", lapis::Precision::{mode}" if mode in precisions else ""
        return f"lapis::{call}<execution_space{precision}>"

    # ---- output --------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        self.lines.append(("  " * self.depth + text) if text else "")

    @contextlib.contextmanager
    def indented(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def include(self, header: str) -> None:
        """The emitted code uses `header` of kokkos_support/ (e.g. "lapis/gemm.hpp")."""
        self.support_headers.add(header)

    # ---- names ---------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        base = c_identifier(base, prefix="t")
        if re.fullmatch(r"[vi]\d+", base):
            base += "_"
        name, n = base, 1
        while name in self.taken:
            name = f"{base}_{n}"
            n += 1
        self.taken.add(name)
        return name

    def kernel_label(self, op, fallback: str) -> str:
        base = c_identifier(location_label(op) or fallback, prefix="k")
        count = self.labels[base]
        self.labels[base] += 1
        label = base if count == 0 else f"{base}_{count}"
        return f"{self.model_name}::{label}"

    def fresh_local(self, prefix: str = "v") -> str:
        name = f"{prefix}{self.local_counter}"
        self.local_counter += 1
        return name

    def bind(self, value, expression: str) -> None:
        self.values[value] = expression

    def expr(self, value) -> str:
        """The C++ expression of an SSA scalar: a literal for constants, else its variable."""
        if value in self.device_scalars and not self.in_kernel:
            return self.read_on_host(value)
        if value in self.values:
            return self.values[value]
        from torch_mlir import ir
        if isinstance(value, ir.OpResult):
            owner = ir.OpResult(value).owner
            if owner.name == "arith.constant":
                return self.constant_literal(owner)
        raise ExportError(f"internal: value {value.get_name()} used before it was emitted")

    def read_on_host(self, value) -> str:
        """A scalar a kernel left in a rank-0 View, copied to forward()'s scope (fences)."""
        if value in self.host_copies:
            return self.host_copies[value]
        view = self.device_scalars[value]
        name = self.unique(f"{view}_on_host")
        self.line(f"{cxx_types.scalar(value.type)} {name};")
        self.line(f"Kokkos::deep_copy(exec, {name}, {view});")
        self.line("exec.fence();   // read on the host next")
        self.host_copies[value] = name
        self.reads_back = True
        return name

    def constant_literal(self, op) -> str:
        from torch_mlir import ir
        attr = op.attributes["value"]
        cxx = cxx_types.scalar(op.results[0].type)
        if isinstance(attr, ir.FloatAttr):
            return cxx_types.float_literal(ir.FloatAttr(attr).value, cxx)
        if isinstance(attr, ir.IntegerAttr):
            return cxx_types.int_literal(ir.IntegerAttr(attr).value, cxx)
        if isinstance(attr, ir.BoolAttr):     # i1 constants (masks) come back as BoolAttr
            return cxx_types.int_literal(int(ir.BoolAttr(attr).value), cxx)
        raise ExportError(f"constant {attr} is not a scalar; the emitter expects scalar "
                          f"constants (at {op.location})")

    def memref(self, value) -> MemrefHandle:
        if value not in self.memrefs:
            raise ExportError(f"internal: memref {value.get_name()} used before it was emitted")
        return self.memrefs[value]

    def declare_index(self, expression: str) -> str:
        """`const int64_t vN = expression;` for an index computed in a kernel."""
        name = self.fresh_local("v")
        self.line(f"const int64_t {name} = {expression};")
        return name

    def declare(self, result, expression: str, prefix: str = "v") -> str:
        """`const T vN = expression;` for a scalar result; binds and returns the name. In
        forward()'s own scope (sizes computed from dynamic extents) the name is unique there,
        so that no kernel's locals shadow it."""
        cxx = cxx_types.scalar(result.type)
        name = self.fresh_local(prefix) if self.in_kernel else \
            self.unique("same_size" if cxx == "bool" else "size")
        self.line(f"const {cxx} {name} = {expression};")
        self.bind(result, name)
        return name

    # ---- walking -------------------------------------------------------------------------
    def emit_op(self, op) -> None:
        name = op.name
        self.op_counts[name] += 1
        handler = HANDLERS.get(name)
        if handler is None:
            raise ExportError(f"the Kokkos emitter has no handler for op '{name}' "
                              f"(from {location_label(op) or op.location})",
                              hint="this op survived lowering; please report it with the model")
        handler(self, op)

    def emit_block(self, block) -> None:
        for op in block.operations:
            self.emit_op(op.operation)

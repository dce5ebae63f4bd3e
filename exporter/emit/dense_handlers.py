"""Handlers for the small dense linear algebra (exporter/linalg.py), the recurrences
(exporter/recurrent.py), the row scatter-adds (exporter/scatter.py), the fused attention
(exporter/attention.py), LayerNorm (exporter/layer_norm.py) and FFTs (exporter/fft.py): calls of
kokkos_support/lapis/dense_solve.hpp, recurrent.hpp, scatter.hpp, attention.hpp,
layer_norm.hpp and fft.hpp."""
from __future__ import annotations

from ..attention import OPS as ATTENTION_OPS
from ..fft import OPS as FFT_OPS
from ..layer_norm import OPS as LAYER_NORM_OPS
from ..linalg import OPS as LINALG_OPS
from ..recurrent import OPS as RECURRENT_OPS
from ..scatter import OPS as SCATTER_OPS
from .emitter import KokkosEmitter, handles, location_label

_WHAT = {"lapis.dense_solve": "batched solve A X = B, LU with partial pivoting",
         "lapis.dense_inv": "batched inverse, LU with partial pivoting",
         "lapis.dense_det": "batched determinant, LU with partial pivoting",
         "lapis.dense_cholesky": "batched Cholesky factor",
         "lapis.lstsq": "batched least squares, Householder QR",
         "lapis.lstm_recurrence": "LSTM recurrence, a loop over the steps",
         "lapis.gru_recurrence": "GRU recurrence, a loop over the steps",
         "lapis.index_add": "out = self; out[index[e]] += source[e]",
         "lapis.attention": "softmax(q k^T) v, online softmax",
         "lapis.attention_causal": "softmax(q k^T) v under a causal mask, online softmax",
         "lapis.attention_masked": "softmax(q k^T + mask) v, online softmax",
         "lapis.layer_norm": "LayerNorm over each row",
         "lapis.fft": "forward FFT of each line, Stockham",
         "lapis.ifft": "inverse FFT of each line, Stockham",
         "lapis.rfft": "forward FFT of each real line, one-sided, Stockham",
         "lapis.irfft": "inverse FFT of each one-sided spectrum to a real line, Stockham"}


@handles(*(lapis_op for _, lapis_op, _ in LINALG_OPS.values()))
def _dense(em: KokkosEmitter, op) -> None:
    """`lapis.dense_solve(A, B, X)` -> `lapis::dense_solve<n, execution_space>(label, A, B, X)`;
    the matrix order (rows and columns for lstsq) is a template argument, so that small
    matrices live in registers."""
    from torch_mlir import ir

    views = ", ".join(em.memref(v).cname for v in op.operands)
    shape = ir.MemRefType(op.operands[0].type).shape
    orders = f"{shape[1]}, {shape[2]}" if op.name == "lapis.lstsq" else f"{shape[2]}"
    _call(em, op, LINALG_OPS, "lapis/dense_solve.hpp", f"<{orders}, execution_space>", views)


@handles(*(lapis_op for _, lapis_op, _ in RECURRENT_OPS.values()))
def _recurrence(em: KokkosEmitter, op) -> None:
    """`lapis.lstm_recurrence(pre, w_hh, b_hh, h0, c0, out, h_n, c_n)` -> a call."""
    views = ", ".join(em.memref(v).cname for v in op.operands)
    _call(em, op, RECURRENT_OPS, "lapis/recurrent.hpp", "<execution_space>", views)


@handles(*(lapis_op for _, lapis_op, _ in SCATTER_OPS.values()))
def _scatter(em: KokkosEmitter, op) -> None:
    """`lapis.index_add(self, index, source, out)` -> `lapis::index_add_rows(...)`."""
    views = ", ".join(em.memref(v).cname for v in op.operands)
    _call(em, op, SCATTER_OPS, "lapis/scatter.hpp", "", views)


@handles(*(lapis_op for _, lapis_op, _ in ATTENTION_OPS.values()))
def _attention(em: KokkosEmitter, op) -> None:
    """`lapis.attention(q, k, v[, mask], out)` -> `lapis::attention<D, DV, execution_space>(...)`:
    the head sizes are template arguments, so that a query row and an output row live in
    registers; --precision tf32 follows as a fourth (the tensor-core products of CUDA), and
    so does --precision bf16 on CUDA (attention.hpp has no bfloat16 products: tf32 ones)."""
    from torch_mlir import ir

    views = ", ".join(em.memref(v).cname for v in op.operands)
    head = ir.MemRefType(op.operands[0].type).shape[-1]
    value_head = ir.MemRefType(op.operands[2].type).shape[-1]
    tf32 = em.precision == "tf32" or (em.precision == "bf16" and em.backend == "cuda")
    precision = ", lapis::Precision::tf32" if tf32 else ""
    _call(em, op, ATTENTION_OPS, "lapis/attention.hpp",
          f"<{head}, {value_head}, execution_space{precision}>", views)


@handles(*(lapis_op for _, lapis_op, _ in LAYER_NORM_OPS.values()))
def _layer_norm(em: KokkosEmitter, op) -> None:
    """`lapis.layer_norm(x, weight, bias, eps, out)` -> `lapis::layer_norm_rows(...)`."""
    views = ", ".join(em.memref(v).cname for v in op.operands)
    _call(em, op, LAYER_NORM_OPS, "lapis/layer_norm.hpp", "", views)


@handles(*(lapis_op for _, lapis_op, _ in FFT_OPS.values()))
def _fft(em: KokkosEmitter, op) -> None:
    """`lapis.fft(x, twiddles, scale, out)` -> `lapis::fft(exec, label, n, ...)`; the twiddle
    table of a length-n transform has n - 1 rows."""
    from torch_mlir import ir

    length = ir.MemRefType(op.operands[1].type).shape[0] + 1
    views = ", ".join([str(length)] + [em.memref(v).cname for v in op.operands])
    _call(em, op, FFT_OPS, "lapis/fft.hpp", "", views, f", n = {length}")


def _call(em: KokkosEmitter, op, table, header: str, template: str, views: str,
          detail: str = "") -> None:
    function = next(cxx for _, lapis_op, cxx in table.values() if lapis_op == op.name)
    em.include(header)
    em.kernel_count += 1
    em.line(f"// {location_label(op) or op.name}: {_WHAT[op.name]}{detail} ({header})")
    em.line(f'{function}{template}(exec, "{em.kernel_label(op, op.name.removeprefix("lapis."))}", '
            f"{views});")

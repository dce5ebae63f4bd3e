"""Fused attention end to end (exporter/attention.py -> lapis/attention.hpp) against PyTorch's
scaled_dot_product_attention: no mask with queries and keys of different lengths and a value
width unlike the key width, causal, a boolean key-padding mask, an additive float mask,
[B, L, D] inputs, an explicit scale, nn.MultiheadAttention with a key-padding mask, keys over
several blocks at head widths 16 to 128, and a dynamic batch and sequence run at several
sizes. float32 at 1e-5 and float64 at 1e-12 relative to the largest reference value. All
packages are built three times in one CMake build each: as shipped (the host path, query rows
per thread), with LAPIS_ATTENTION_TEAMS (the GPU path of teams staging keys in scratch memory,
run on the host threads) and with LAPIS_ATTENTION_MMA (CUDA's tensor-core path, MmaAttention,
run thread by thread with the mma emulated from the lanes' fragments and rounded as the tensor
cores round: float32 heads of 8 to 64; float64 takes the host path there). The host path's
libraries also run with LAPIS_GEMM_ISA=avx2 and =baseline: its float32 fold is compiled per
instruction set (AVX-512, AVX2, 128-bit) and these pick the narrower ones on an AVX-512 CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from . import batched
from .compare import relative_error
from .conftest import REPO, run

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
SDPA = F.scaled_dot_product_attention


class Plain(torch.nn.Module):
    def forward(self, q, k, v):
        return SDPA(q, k, v)


class Causal(torch.nn.Module):
    def forward(self, q, k, v):
        return SDPA(q, k, v, is_causal=True)


class Masked(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return SDPA(q, k, v, attn_mask=mask)


class Scaled(torch.nn.Module):
    def forward(self, q, k, v):
        return SDPA(q, k, v, scale=0.3)


class HeadAttention(torch.nn.Module):
    """nn.MultiheadAttention over [batch, sequence, 48] with 3 heads and a key-padding mask."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attention = torch.nn.MultiheadAttention(48, 3, batch_first=True)

    def forward(self, x, padding):
        return self.attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def padding_mask(batch: int, length: int, seed: int) -> torch.Tensor:
    """True where a key is padding; every sequence keeps its first key."""
    keep = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed)) < 0.7
    keep[:, 0] = True
    return keep


def _cases():
    """name -> (module, inputs, dynamic shapes or None, [(tag, inputs) of further runs])."""
    cases = {}
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        q, k, v = randn(2, 3, 37, 16, dtype=dtype, seed=1), randn(2, 3, 50, 16, dtype=dtype,
                                                                  seed=2), \
            randn(2, 3, 50, 24, dtype=dtype, seed=3)
        cases[f"plain_{tag}"] = (Plain(), (q, k, v), None, [])
        cases[f"causal_{tag}"] = (Causal(), (randn(2, 2, 45, 8, dtype=dtype, seed=4),
                                             randn(2, 2, 45, 8, dtype=dtype, seed=5),
                                             randn(2, 2, 45, 8, dtype=dtype, seed=6)), None, [])
        keep = ~padding_mask(2, 50, 7)
        cases[f"bool_mask_{tag}"] = (Masked(), (q, k, v, keep[:, None, None, :]), None, [])
        cases[f"float_mask_{tag}"] = (Masked(), (q, k, v, randn(37, 50, dtype=dtype, seed=8)),
                                      None, [])
        # Keys over several host blocks (lapis::attention_detail::host_keys: 128 keys a block
        # for heads up to 32 wide, 64 up to 64, 32 above), the last one partial, so that rows
        # are rescaled from block to block; causal across blocks too.
        cases[f"long_{tag}"] = (Plain(), (randn(1, 2, 21, 16, dtype=dtype, seed=23),
                                          randn(1, 2, 300, 16, dtype=dtype, seed=24),
                                          randn(1, 2, 300, 16, dtype=dtype, seed=25)), None, [])
        cases[f"long_causal_{tag}"] = (Causal(), tuple(
            randn(1, 1, 260, 32, dtype=dtype, seed=26 + i) for i in range(3)), None, [])
    cases["wide_heads_f32"] = (Plain(), (randn(1, 2, 9, 64, seed=29), randn(1, 2, 150, 64, seed=30),
                                         randn(1, 2, 150, 64, seed=31)), None, [])
    cases["widest_heads_f32"] = (Masked(), (randn(1, 1, 5, 128, seed=32),
                                            randn(1, 1, 70, 128, seed=33),
                                            randn(1, 1, 70, 128, seed=34),
                                            randn(5, 70, seed=35)), None, [])
    cases["rank3_scaled_f32"] = (Scaled(), (randn(4, 33, 32, seed=9), randn(4, 20, 32, seed=10),
                                            randn(4, 20, 32, seed=11)), None, [])
    cases["multihead_f32"] = (HeadAttention().eval(), (randn(3, 40, 48, seed=12),
                                                       padding_mask(3, 40, 13)), None, [])
    batch, length = torch.export.Dim("batch", min=0, max=1 << 16), \
        torch.export.Dim("length", min=1, max=1 << 16)
    shapes = [{0: batch, 2: length}] * 3
    runs = [(f"{b}x{n}", tuple(randn(b, 2, n, 16, seed=14 + i) for i in range(3)))
            for b, n in ((1, 1), (3, 70), (0, 5))]
    cases["dynamic_f32"] = (Causal(), (randn(2, 2, 9, 16, seed=20), randn(2, 2, 9, 16, seed=21),
                                       randn(2, 2, 9, 16, seed=22)), shapes, runs)
    return cases


CASES = _cases()
PATHS = {"rows": "-O1", "teams": "-O1 -DLAPIS_ATTENTION_TEAMS", "mma": "-O1 -DLAPIS_ATTENTION_MMA"}
# Runs of a path's libraries under another instruction set: (path, LAPIS_GEMM_ISA).
ISA_RUNS = {"rows_avx2": ("rows", "avx2"), "rows_baseline": ("rows", "baseline")}
RUNS = [(name, tag) for name, (_, _, _, more) in CASES.items()
        for tag in [None, *(t for t, _ in more)]]


@pytest.fixture(scope="module")
def built(tmp_path_factory, kokkos_root):
    work = tmp_path_factory.mktemp("attention")
    packages = {}
    for name, (module, inputs, dynamic, _) in CASES.items():
        path = work / f"{name}.pt2"
        torch.export.save(torch.export.export(module, inputs, dynamic_shapes=dynamic), path)
        packages[name] = batched.export(path, work / name, name)
    results = {}
    for path_name, flags in PATHS.items():
        libraries = batched.build(packages, work / path_name, kokkos_root,
                                  optimization=flags)
        jobs, references = {}, {}
        for name, (module, inputs, _, more) in CASES.items():
            for tag, run_inputs in [(None, inputs), *more]:
                with torch.no_grad():
                    references[name, tag] = module(*run_inputs).numpy()
                jobs[name, tag] = (libraries[name], packages[name],
                                   [t.numpy() for t in run_inputs])
        outputs = batched.run(jobs, work / path_name)
        results[path_name] = {key: (outputs[key][0], references[key]) for key in jobs}
        for run_name, (run_path, isa) in ISA_RUNS.items():
            if run_path == path_name:
                outputs = batched.run(jobs, work / path_name, env={"LAPIS_GEMM_ISA": isa})
                results[run_name] = {key: (outputs[key][0], references[key]) for key in jobs}
    return packages, results


def test_each_attention_is_one_fused_call(built):
    packages, _ = built
    for name, package in packages.items():
        source = (package / "src" / f"{name}.cpp").read_text()
        assert source.count("lapis::attention") == 1, name
        assert "_softmax" not in source and "::softmax" not in source, name


@pytest.mark.parametrize("path", [*PATHS, *ISA_RUNS])
@pytest.mark.parametrize("name,tag", RUNS, ids=[f"{n}-{t}" if t else n for n, t in RUNS])
def test_matches_pytorch(built, path, name, tag):
    ours, reference = built[1][path][name, tag]
    dtype = CASES[name][1][0].dtype
    batched.assert_close(ours, reference, TOLERANCE[dtype], f"{name} {tag or ''} ({path})")


# ---- the tensor-core path's statement (attention_mma_check: MmaAttention on the host) --------
MMA_KEYS = 32   # MmaAttention's keys a block (attention.hpp kMmaKeys)


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """Half an ulp of tf32 added, then truncated: the tensor cores' operands (split_fast)."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def mma_statement(q, k, v, mask_kind, mask, precision):
    """What MmaAttention computes, in float64. fp32: softmax(q k^T + mask) v. tf32: q, k, v and
    the weights rounded to tf32 (the mma operands), each weight exp(s - m) taken against the
    running maximum m at the end of its block of MMA_KEYS keys (the online softmax), then
    rescaled to the row's maximum; the sum of the weights unrounded. Rows with every key masked
    give 0."""
    tf32 = precision == "tf32"
    r = (lambda x: round_to_tf32(x).astype(np.float64)) if tf32 else \
        (lambda x: np.asarray(x, np.float64))
    s = r(q) @ np.swapaxes(r(k), -1, -2)
    length, keys = s.shape[-2:]
    if mask_kind == "causal":
        s = np.where(np.tril(np.ones((length, keys), bool)), s, -np.inf)
    elif mask_kind == "bool":
        s = np.where(mask.astype(bool), s, -np.inf)
    elif mask_kind == "float":
        s = s + mask
    with np.errstate(invalid="ignore"):
        running = np.concatenate([np.repeat(s[..., :j + MMA_KEYS].max(-1, keepdims=True),
                                            min(MMA_KEYS, keys - j), -1)
                                  for j in range(0, keys, MMA_KEYS)], -1)
        top = s.max(-1, keepdims=True)
        p = np.where(running == -np.inf, 0.0, np.exp(s - np.where(running == -np.inf, 0, running)))
        rescale = np.where(top == -np.inf, 0.0,
                           np.exp(running - np.where(top == -np.inf, 0, top)))
    weights = (r(p.astype(np.float32)) if tf32 else p) * rescale
    total = (p * rescale).sum(-1, keepdims=True)
    out = (weights @ r(v)) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, out, 0.0)


@pytest.fixture(scope="module")
def attention_mma_check(tmp_path_factory, kokkos_root):
    build = tmp_path_factory.mktemp("attention_mma_check")
    run(["cmake", "-S", REPO / "integration_tests" / "attention_mma_check", "-B", build,
         "-DCMAKE_BUILD_TYPE=Release", f"-DKokkos_ROOT={kokkos_root}"])
    run(["cmake", "--build", build, "-j", "2"])
    return build / "attention_mma_check"


@pytest.mark.parametrize("precision,mask_kind,d,dv,b,h,length,keys", [
    ("fp32", "none", 16, 24, 2, 3, 37, 50),    # partial row blocks and key blocks
    ("tf32", "none", 16, 24, 2, 3, 37, 50),
    ("fp32", "causal", 8, 8, 2, 2, 70, 70),
    ("tf32", "causal", 32, 32, 1, 2, 100, 100),
    ("fp32", "bool", 32, 32, 3, 2, 65, 45),     # batch entry 1: every key masked
    ("tf32", "float", 64, 64, 2, 1, 40, 33),
])
def test_mma_attention_matches_its_statement(tmp_path, attention_mma_check, precision,
                                             mask_kind, d, dv, b, h, length, keys):
    """The tensor-core path thread by thread with the mma emulated (its staging, fragment
    layouts, masks, online softmax and rounding; every output written): fp32 within 1e-5 of
    float64; tf32 within 1e-5 of the float64 statement with tf32 operands, and at least 1e-4
    off the unrounded one (the rounding did happen)."""
    rng = np.random.default_rng(d * 1000 + length)
    q = rng.standard_normal((b, h, length, d)).astype(np.float32)
    k = rng.standard_normal((b, h, keys, d)).astype(np.float32)
    v = rng.standard_normal((b, h, keys, dv)).astype(np.float32)
    mask = None
    if mask_kind == "bool":
        mask = (rng.random((b, 1, 1, keys)) < 0.7).astype(np.uint8)
        mask[1] = 0
    elif mask_kind == "float":
        mask = rng.standard_normal((1, 1, length, keys)).astype(np.float32)
    for name, array in (("q", q), ("k", k), ("v", v), ("mask", mask)):
        if array is not None:
            array.tofile(tmp_path / f"{name}.bin")
    run([attention_mma_check, precision, mask_kind, d, dv, b, h, length, keys, tmp_path])
    ours = np.fromfile(tmp_path / "out.bin", np.float32).reshape(b, h, length, dv)
    assert not np.isnan(ours).any()
    exact = mma_statement(q, k, v, mask_kind, mask, "fp32")
    if mask_kind == "bool":
        assert not ours[1].any()   # rows with no key: zeros
    if precision == "fp32":
        assert relative_error(ours, exact) <= 1e-5
    else:
        assert relative_error(ours, mma_statement(q, k, v, mask_kind, mask, "tf32")) \
            <= 1e-5
        assert relative_error(ours, exact) >= 1e-4

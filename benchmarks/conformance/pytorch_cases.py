"""PyTorch conformance cases: name, module factory, example inputs (fixed seeds)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class LSTMOutputs(nn.Module):
    """nn.LSTM with its outputs flattened: (output, h_n, c_n)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.lstm = nn.LSTM(*args, **kwargs)

    def forward(self, x):
        output, (h, c) = self.lstm(x)
        return output, h, c


class ResidualBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, plus the input, relu."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _i(low, high, *shape, seed=0):
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


X = lambda: (_r(2, 8, 16),)
AB = lambda: (_r(4, 8), _r(4, 8, seed=1))
INTS = lambda: (_i(-50, 50, 4, 8), _i(-50, 50, 4, 8, seed=1))
IMG = lambda: (_r(1, 4, 12, 12),)
CASES = [
    ("add", lambda: Fn(lambda a, b: a + b), lambda: (_r(4, 8), _r(4, 8, seed=1))),
    ("mul_broadcast", lambda: Fn(lambda a, b: a * b), lambda: (_r(4, 8), _r(8, seed=1))),
    ("div", lambda: Fn(lambda a, b: a / (b.abs() + 1)), lambda: (_r(4, 8), _r(4, 8, seed=1))),
    ("exp_log", lambda: Fn(lambda a: torch.log(torch.exp(a) + 1)), X),
    ("sqrt_rsqrt", lambda: Fn(lambda a: torch.sqrt(a.abs()) + torch.rsqrt(a.abs() + 1)), X),
    ("gt_where", lambda: Fn(lambda a, b: torch.where(a > b, a, b)), lambda: (_r(4, 8), _r(4, 8, seed=1))),
    ("eq_float", lambda: Fn(lambda a: (a.round() == 0).float()), X),
    ("sum", lambda: Fn(lambda a: a.sum(dim=-1)), X),
    ("mean", lambda: Fn(lambda a: a.mean(dim=1)), X),
    ("max_dim", lambda: Fn(lambda a: a.max(dim=-1).values), X),
    ("argmax", lambda: Fn(lambda a: a.argmax(dim=-1)), X),
    ("var", lambda: Fn(lambda a: a.var(dim=-1)), X),
    ("matmul", lambda: Fn(torch.matmul), lambda: (_r(8, 16), _r(16, 4, seed=1))),
    ("bmm", lambda: Fn(torch.bmm), lambda: (_r(2, 8, 16), _r(2, 16, 4, seed=1))),
    ("linear", lambda: nn.Linear(16, 8), X),
    ("conv1d", lambda: nn.Conv1d(8, 4, 3, stride=2, padding=1), lambda: (_r(1, 8, 20),)),
    ("conv2d", lambda: nn.Conv2d(4, 6, 3, padding=1), IMG),
    ("conv2d_stride_dil", lambda: nn.Conv2d(4, 6, 3, stride=2, dilation=2), IMG),
    ("conv2d_groups", lambda: nn.Conv2d(4, 8, 3, groups=2), IMG),
    ("conv3d", lambda: nn.Conv3d(2, 3, 3, padding=1), lambda: (_r(1, 2, 6, 6, 6),)),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), IMG),
    ("maxpool2d", lambda: nn.MaxPool2d(2), IMG),
    ("avgpool2d", lambda: nn.AvgPool2d(3, stride=2, padding=1), IMG),
    ("adaptive_avgpool2d", lambda: nn.AdaptiveAvgPool2d(1), IMG),
    ("batchnorm2d", lambda: nn.BatchNorm2d(4).eval(), IMG),
    ("layernorm", lambda: nn.LayerNorm(16), X),
    ("groupnorm", lambda: nn.GroupNorm(2, 4), IMG),
    ("instancenorm2d", lambda: nn.InstanceNorm2d(4), IMG),
    ("relu", lambda: nn.ReLU(), X),
    ("leaky_relu", lambda: nn.LeakyReLU(0.1), X),
    ("gelu", lambda: nn.GELU(), X),
    ("silu", lambda: nn.SiLU(), X),
    ("softplus", lambda: nn.Softplus(), X),
    ("elu", lambda: nn.ELU(), X),
    ("tanh", lambda: nn.Tanh(), X),
    ("sigmoid", lambda: nn.Sigmoid(), X),
    ("hardswish", lambda: nn.Hardswish(), X),
    ("softmax", lambda: nn.Softmax(dim=-1), X),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), X),
    ("cat", lambda: Fn(lambda a, b: torch.cat([a, b], dim=1)), lambda: (_r(2, 3), _r(2, 5, seed=1))),
    ("slice", lambda: Fn(lambda a: a[:, 2:6, ::2]), X),
    ("permute", lambda: Fn(lambda a: a.permute(2, 0, 1).contiguous()), X),
    ("reshape", lambda: Fn(lambda a: a.reshape(4, 64)), X),
    ("expand", lambda: Fn(lambda a: a.expand(3, 8) + 0), lambda: (_r(1, 8),)),
    ("clamp", lambda: Fn(lambda a: a.clamp(-0.5, 0.5)), X),
    ("pad", lambda: Fn(lambda a: F.pad(a, (1, 2))), X),
    ("gather_int64", lambda: Fn(lambda a, i: torch.gather(a, 1, i)),
     lambda: (_r(4, 8), torch.randint(0, 8, (4, 3), generator=torch.Generator().manual_seed(2)))),
    ("index_select_int64", lambda: Fn(lambda a, i: torch.index_select(a, 0, i)),
     lambda: (_r(6, 4), torch.tensor([0, 5, 2]))),
    ("where_bool_mask", lambda: Fn(lambda m, a: torch.where(m, a, torch.zeros_like(a))),
     lambda: (_r(4, 8) > 0, _r(4, 8, seed=1))),
    ("embedding_int64", lambda: nn.Embedding(10, 4), lambda: (torch.tensor([[1, 3, 9], [0, 2, 2]]),)),
    ("sdpa", lambda: Fn(F.scaled_dot_product_attention),
     lambda: (_r(1, 2, 5, 8), _r(1, 2, 5, 8, seed=1), _r(1, 2, 5, 8, seed=2))),
    ("transformer_encoder_layer",
     lambda: nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval(), X),
    ("lstm_cell", lambda: Fn(nn.LSTMCell(8, 4)), lambda: (_r(2, 8),)),
    ("mlp_block", lambda: nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)), X),
    ("conv_bn_relu", lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4).eval(), nn.ReLU()), IMG),
    # elementwise and comparisons: bool outputs, int64 arithmetic
    ("pow_abs_neg", lambda: Fn(lambda a: -(a.abs() ** 1.5) + a * a), X),
    ("lt_bool_out", lambda: Fn(lambda a, b: a < b), AB),
    ("ge_ne_bool_out", lambda: Fn(lambda a, b: (a >= b, a != b.round())), AB),
    ("logical_ops_bool", lambda: Fn(lambda m, a: (m & (a > 0)) | ~m ^ (a < -1)),
     lambda: (_r(4, 8) > 0, _r(4, 8, seed=1))),
    ("masked_fill_bool", lambda: Fn(lambda m, a: a.masked_fill(m, -1.0)),
     lambda: (_r(4, 8) > 0, _r(4, 8, seed=1))),
    ("int64_arith", lambda: Fn(lambda a, b: a * 3 + b - 7), INTS),
    ("int64_floordiv_rem", lambda: Fn(lambda a, b: (torch.div(a, 4, rounding_mode="floor"),
                                                    torch.remainder(a, 5))), INTS),
    ("int64_max_clamp", lambda: Fn(lambda a, b: torch.maximum(a, b).clamp(-20, 30)), INTS),
    ("int64_to_float", lambda: Fn(lambda i, x: i.float() * x + i.sum()),
     lambda: (_i(-5, 5, 4, 8), _r(4, 8, seed=1))),
    ("bool_to_float", lambda: Fn(lambda a: (a > 0).float() * 2 - 1), X),
    # reductions
    ("min_dim", lambda: Fn(lambda a: a.min(dim=1).values), X),
    ("amax_two_dims", lambda: Fn(lambda a: a.amax(dim=(1, 2))), X),
    ("amin_keepdim", lambda: Fn(lambda a: a - a.amin(dim=-1, keepdim=True)), X),
    ("argmin", lambda: Fn(lambda a: a.argmin(dim=1)), X),
    ("max_dim_indices", lambda: Fn(lambda a: tuple(a.max(dim=-1))), X),
    ("int64_sum", lambda: Fn(lambda a, b: a.sum(dim=1) + b.sum(dim=1)), INTS),
    ("sum_all", lambda: Fn(lambda a: a.sum()), X),
    ("var_unbiased_keepdim", lambda: Fn(lambda a: a.var(dim=(1, 2), keepdim=True, correction=0)),
     IMG),
    # matmul family
    ("matmul_broadcast", lambda: Fn(torch.matmul), lambda: (_r(2, 8, 16), _r(16, 4, seed=1))),
    ("linear_no_bias_3d", lambda: nn.Linear(16, 8, bias=False), X),
    ("addmm", lambda: Fn(lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0)),
     lambda: (_r(8, 4), _r(8, 16, seed=1), _r(16, 4, seed=2))),
    # convolutions
    ("conv1d_dil_groups", lambda: nn.Conv1d(8, 8, 3, dilation=2, groups=4, padding=2),
     lambda: (_r(1, 8, 20),)),
    ("conv2d_depthwise", lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), IMG),
    ("conv2d_1x1_stride", lambda: nn.Conv2d(4, 8, 1, stride=2), IMG),
    ("conv2d_asym_pad", lambda: nn.Conv2d(4, 6, (3, 5), padding=(1, 2), stride=(1, 2)), IMG),
    ("conv3d_stride_groups", lambda: nn.Conv3d(4, 4, 3, stride=2, groups=2),
     lambda: (_r(1, 4, 7, 7, 7),)),
    ("conv_transpose1d", lambda: nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1),
     lambda: (_r(1, 4, 10),)),
    ("conv_transpose2d_pad_outpad", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                               output_padding=1, groups=2), IMG),
    # pooling
    ("maxpool2d_pad_ceil", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), IMG),
    ("maxpool1d", lambda: nn.MaxPool1d(3, stride=2), lambda: (_r(2, 4, 15),)),
    ("avgpool2d_exclude_pad", lambda: nn.AvgPool2d(3, stride=2, padding=1,
                                                   count_include_pad=False), IMG),
    ("adaptive_maxpool2d", lambda: nn.AdaptiveMaxPool2d((3, 4)), IMG),
    ("adaptive_avgpool2d_uneven", lambda: nn.AdaptiveAvgPool2d((5, 7)), IMG),
    # normalisation
    ("batchnorm1d", lambda: nn.BatchNorm1d(8).eval(), X),
    ("layernorm_2d_shape", lambda: nn.LayerNorm([8, 16]), X),
    ("instancenorm2d_affine", lambda: nn.InstanceNorm2d(4, affine=True), IMG),
    # activations
    ("relu6_hardsigmoid", lambda: Fn(lambda a: F.relu6(a * 4) + F.hardsigmoid(a)), X),
    ("mish", lambda: nn.Mish(), X),
    ("prelu", lambda: nn.PReLU(8), lambda: (_r(2, 8, 5),)),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh"), X),
    ("softmax_dim1_4d", lambda: nn.Softmax(dim=1), IMG),
    # data movement
    ("transpose_flatten", lambda: Fn(lambda a: a.transpose(1, 2).flatten(1)), X),
    ("squeeze_unsqueeze", lambda: Fn(lambda a: a.unsqueeze(1).squeeze(0) * 2),
     lambda: (_r(1, 8, 4),)),
    ("stack", lambda: Fn(lambda a, b: torch.stack([a, b], dim=1)), AB),
    ("split_outputs", lambda: Fn(lambda a: torch.split(a, [3, 5], dim=1)), lambda: (_r(4, 8),)),
    ("repeat", lambda: Fn(lambda a: a.repeat(2, 1, 3)), lambda: (_r(2, 3, 4),)),
    ("flip", lambda: Fn(lambda a: torch.flip(a, dims=[1])), X),
    ("pad_reflect", lambda: Fn(lambda a: F.pad(a, (2, 1, 1, 2), mode="reflect")), IMG),
    ("index_select_dim1_int64", lambda: Fn(lambda a, i: torch.index_select(a, 1, i)),
     lambda: (_r(4, 8), torch.tensor([7, 0, 3, 3]))),
    ("upsample_nearest", lambda: nn.Upsample(scale_factor=2, mode="nearest"), IMG),
    ("upsample_bilinear", lambda: nn.Upsample(scale_factor=2, mode="bilinear",
                                              align_corners=False), IMG),
    ("cumsum", lambda: Fn(lambda a: torch.cumsum(a, dim=-1)), X),
    # attention and blocks
    ("sdpa_causal", lambda: Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v,
                                                                              is_causal=True)),
     lambda: (_r(1, 2, 5, 8), _r(1, 2, 5, 8, seed=1), _r(1, 2, 5, 8, seed=2))),
    ("residual_block", lambda: ResidualBlock(4).eval(), IMG),
    ("lstm_2layer", lambda: LSTMOutputs(8, 6, num_layers=2, batch_first=True),
     lambda: (_r(2, 5, 8),)),
    ("gru_cell", lambda: Fn(nn.GRUCell(8, 4)), lambda: (_r(2, 8),)),
    # more elementwise, reductions and typed ops
    ("trig_erf", lambda: Fn(lambda a: torch.sin(a) * torch.cos(a) + torch.erf(a)), X),
    ("floor_ceil_round_sign", lambda: Fn(lambda a: torch.floor(a * 3) + torch.ceil(a) -
                                         torch.round(a * 2) + torch.sign(a)), X),
    ("int64_compare_bool_out", lambda: Fn(lambda a, b: (a == b) | (a > 2 * b)), INTS),
    ("any_all_bool_out", lambda: Fn(lambda a: ((a > 1).any(dim=1), (a > -2).all(dim=-1))), X),
    ("std_prod", lambda: Fn(lambda a: a.std(dim=-1) + (a * 0.1 + 1).prod(dim=-1)), X),
    ("logsumexp", lambda: Fn(lambda a: torch.logsumexp(a, dim=-1)), X),
    ("l2_normalize", lambda: Fn(lambda a: F.normalize(a, dim=-1)), X),
    ("argmax_dim0_keepdim", lambda: Fn(lambda a: a.argmax(dim=0, keepdim=True)), X),
    ("tril_mask", lambda: Fn(lambda a: a.tril() + a.triu(1) * 0.5), lambda: (_r(6, 6),)),
    ("einsum_bij_bjk", lambda: Fn(lambda a, b: torch.einsum("bij,bjk->bik", a, b)),
     lambda: (_r(2, 4, 8), _r(2, 8, 3, seed=1))),
    ("baddbmm", lambda: Fn(lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.5)),
     lambda: (_r(2, 4, 3), _r(2, 4, 8, seed=1), _r(2, 8, 3, seed=2))),
    ("conv_transpose3d", lambda: nn.ConvTranspose3d(2, 3, 2, stride=2),
     lambda: (_r(1, 2, 3, 4, 4),)),
    ("conv2d_reflect_pad", lambda: nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), IMG),
    ("maxpool3d", lambda: nn.MaxPool3d(2), lambda: (_r(1, 2, 6, 6, 6),)),
    ("avgpool1d", lambda: nn.AvgPool1d(4, stride=2, padding=1), lambda: (_r(2, 4, 15),)),
    ("adaptive_avgpool1d", lambda: nn.AdaptiveAvgPool1d(5), lambda: (_r(2, 4, 15),)),
    ("embedding_padding_idx", lambda: nn.Embedding(10, 4, padding_idx=0),
     lambda: (torch.tensor([[0, 3, 9], [0, 0, 2]]),)),
    ("topk", lambda: Fn(lambda a: tuple(torch.topk(a, 3, dim=-1))), X),
    ("sdpa_bool_mask", lambda: Fn(lambda q, k, v, m: F.scaled_dot_product_attention(
        q, k, v, attn_mask=m)),
     lambda: (_r(1, 2, 5, 8), _r(1, 2, 5, 8, seed=1), _r(1, 2, 5, 8, seed=2),
              _r(5, 5, seed=3) > -0.5)),
    ("mha_key_padding_mask", lambda: Fn(nn.MultiheadAttention(16, 2, batch_first=True)),
     lambda: (_r(2, 5, 16), _r(2, 5, 16, seed=1), _r(2, 5, 16, seed=2),
              torch.tensor([[False] * 4 + [True], [False] * 5]))),
    ("gru_1layer", lambda: Fn(nn.GRU(8, 6, batch_first=True)), lambda: (_r(2, 5, 8),)),
    ("float64_linear_tanh", lambda: nn.Sequential(nn.Linear(16, 8), nn.Tanh()).double(),
     lambda: (_r(2, 16).double(),)),
    ("int32_add_mul", lambda: Fn(lambda a, b: a * b + a),
     lambda: (_i(-9, 9, 4, 8).int(), _i(-9, 9, 4, 8, seed=1).int())),
]

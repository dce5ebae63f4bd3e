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


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


X = lambda: (_r(2, 8, 16),)
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
]

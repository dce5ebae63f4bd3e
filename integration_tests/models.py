"""Test models defined in our own code (no torchvision): an MLP, a small CNN that touches the
ops real CNNs use, and ResNet18 (BasicBlock, [2, 2, 2, 2], 1000 classes). Fixed seeds."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, features: int = 32, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = torch.tanh(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class SurrogateMLP(nn.Module):
    """A science surrogate's MLP: each activation the CUDA linear layers fold in (SiLU, GELU,
    tanh, ReLU), a width that is no multiple of the tiles and a one-value head."""

    def __init__(self, features: int = 16, hidden: int = 72, depth: int = 4):
        super().__init__()
        widths = [features] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(hidden, 1)
        self.activations = [nn.functional.silu, nn.functional.gelu, torch.tanh, torch.relu]

    def forward(self, x):
        for layer, activation in zip(self.layers, self.activations * len(self.layers)):
            x = activation(layer(x))
        return self.head(x)


class WideMLP(nn.Module):
    """The GPU benchmark's surrogate: 16 -> 512 -> 512 -> 512 -> 512 -> 1, SiLU."""

    def __init__(self, features: int = 16, hidden: int = 512, depth: int = 4):
        super().__init__()
        widths = [features] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        for layer in self.layers:
            x = nn.functional.silu(layer(x))
        return self.head(x)


class SmallCNN(nn.Module):
    """conv (stride, padding, groups), batch norm, relu, max pool, a residual add, adaptive
    average pool, flatten, linear, softmax."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 1, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.bn2(self.conv2(x)) + x)
        x = self.avgpool(torch.relu(self.conv3(x)))
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 architecture, written out here."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride,
                                                 bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResidualNet(nn.Module):
    """Two ResNet basic blocks, one with the identity and one with a strided 1x1 downsample as
    the residual: the residual add + ReLU that the tuned convolution takes into its epilogue."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.block1 = BasicBlock(8, 8)
        self.block2 = BasicBlock(8, 16, stride=2, downsample=nn.Sequential(
            nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.block2(self.block1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvZoo(nn.Module):
    """Convolutions that take every path of the tuned kernel: strides 1 and 2, filter widths
    1, 3, 5 and 7, dilation, widths divisible by 7 or not, channel counts not a multiple of 8."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 12, 7, stride=2, padding=3)              # 7x7 / 2, width 14
        self.b = nn.Conv2d(12, 20, 3, padding=1)                       # 3x3, 20 channels
        self.c = nn.Conv2d(20, 16, 5, padding=2, bias=False)           # 5x5 (generic width)
        self.d = nn.Conv2d(16, 16, 3, padding=2, dilation=2)           # dilated
        self.e = nn.Conv2d(16, 24, 1, stride=2)                        # 1x1 / 2, width 7
        self.f = nn.Conv2d(24, 8, (3, 1), padding=(1, 0))              # 3x1

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = self.d(self.c(x))
        x = self.e(x)
        return self.f(x)


class Transformer(nn.Module):
    """A transformer encoder over [batch, sequence, width] tokens (nn.TransformerEncoder, GELU,
    post-norm): the CPU benchmark's 2 layers of width 64, 4 heads, feed-forward 128; the GPU
    benchmark's 4 layers of width 256, 8 heads, feed-forward 1024."""

    def __init__(self, layers: int = 2, width: int = 64, heads: int = 4, feedforward: int = 128):
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, feedforward, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


def randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Give batch norms non-trivial running statistics, as a trained model has."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
    return model


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A named test model in eval mode with seeded weights, and its input shape."""
    torch.manual_seed(seed)
    model, shape = {
        "mlp": (lambda: MLP(), (4, 32)),
        "surrogate_mlp": (lambda: SurrogateMLP(), (37, 16)),
        "wide_mlp": (lambda: WideMLP(), (65536, 16)),
        "small_cnn": (lambda: SmallCNN(), (2, 3, 32, 32)),
        "resnet18": (lambda: ResNet18(), (1, 3, 224, 224)),
        "conv_zoo": (lambda: ConvZoo(), (2, 3, 28, 27)),
        "residual_net": (lambda: ResidualNet(), (2, 3, 12, 12)),
        "transformer": (lambda: Transformer(), (2, 128, 64)),
        "transformer_gpu": (lambda: Transformer(4, 256, 8, 1024), (32, 512, 256)),
    }[name]
    return randomize_batch_norm(model(), seed).eval(), shape

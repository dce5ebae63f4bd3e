"""Models and functions whose derivatives the gradient tests export (fixed seeds, no files).

`lapis-export FILE.py:NAME` exports the functions below: they take derivatives themselves, with
torch.autograd.grad or torch.func transforms, the way PINN and potential codes write them.
"""
from __future__ import annotations

import torch
from torch import nn



class PINN(nn.Module):
    """u(x, y) of a point: Fourier features, then tanh layers (float64)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("frequencies", 2.0 * torch.randn(2, 8))
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                                 nn.Linear(32, 1))

    def forward(self, points):
        phase = points @ self.frequencies
        return self.net(torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1))


pinn = PINN().double().eval()
pinn_parameters = {name: value.detach() for name, value in
                   [*pinn.named_parameters(), *pinn.named_buffers()]}


def mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 1)).to(dtype).eval()


class SmallCNN(nn.Module):
    """A field model: conv, GELU, max and average pooling, linear -> one value per sample."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.max_pool = nn.MaxPool2d(2)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, 1)

    def forward(self, field):
        hidden = self.pool(self.max_pool(nn.functional.gelu(self.conv(field))))
        return self.head(hidden.flatten(1))


class ForcesInForward(nn.Module):
    """A potential that returns its own forces: autograd.grad inside forward, as written for
    eager PyTorch (torch.export cannot take it; `file.py:function` can)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.energy = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()

    def forward(self, positions):
        with torch.enable_grad():
            positions = positions.detach().requires_grad_(True)
            energy = self.energy(positions).sum()
            gradient, = torch.autograd.grad(energy, positions)
        return energy.detach(), -gradient


forces_model = ForcesInForward().eval()


def energy_and_forces(positions):
    return forces_model(positions)


def _u(parameters, point):
    return torch.func.functional_call(pinn, parameters, (point,)).squeeze(-1)


def laplacian(points):
    """Laplacian of the PINN's u at each point, by second derivatives over the batch."""
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        u = pinn(points)
        gradient, = torch.autograd.grad(u.sum(), points, create_graph=True)
        result = torch.zeros_like(u[:, 0])
        for axis in range(points.shape[1]):
            second, = torch.autograd.grad(gradient[:, axis].sum(), points, create_graph=True)
            result = result + second[:, axis]
    return result.detach()


def laplacian_hessian(points):
    """The same Laplacian with torch.func.hessian under vmap (a fixed number of points)."""
    hessians = torch.vmap(torch.func.hessian(_u, argnums=1), in_dims=(None, 0))(
        pinn_parameters, points)
    return hessians.diagonal(dim1=-2, dim2=-1).sum(-1)


def gradient_func(points):
    """du/dx per point with torch.func.grad over the parameters dict (vmap, any count)."""
    return torch.vmap(torch.func.grad(_u, argnums=1), in_dims=(None, 0))(pinn_parameters,
                                                                          points)


def laplacian_reference(points):
    """torch.func.hessian eagerly: what the exported Laplacians are compared with."""
    return laplacian_hessian(points)

"""LAMB (You et al. 2020, "Large batch optimization for deep learning"), the optimiser of "ResNet
strikes back"; torch has none. The update is timm's ``timm.optim.Lamb`` with its defaults
(tests/test_modern_training.py compares the two step by step): Adam moments with bias
correction on gradients divided by max(1, global gradient norm / ``max_grad_norm``), decoupled
weight decay added to the update, and the layer-wise trust ratio ||w|| / ||update|| applied to
every parameter that is decayed.
"""

from __future__ import annotations

import math

import torch


class Lamb(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return loss
        one = torch.ones((), device=grads[0].device)
        scale = one
        if self.max_grad_norm:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            scale = torch.where(norm > self.max_grad_norm, norm / self.max_grad_norm, one)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad / scale
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                update = (exp_avg / correction1) / (exp_avg_sq.sqrt() / math.sqrt(correction2) + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, one)
                    update.mul_(trust)
                p.add_(update, alpha=-group["lr"])
        return loss

"""AdamW that computes the same bits on any x86-64 CPU with AVX2.

``torch.optim.AdamW`` takes the square root of the second moment with PyTorch's vectorised
float32 ``sqrt``, which on some CPUs comes from a vector-math library that is not correctly
rounded (83% of values on the AMD EPYC machines this project trains on, 100% on an emulated
Intel Haswell): the same training then writes other weights on another CPU. This optimiser is
the same update (decoupled weight decay, bias-corrected moments, ``eps`` added after the
square root), with two changes that make it exact:

- the square root is taken in float64 and rounded to float32, which equals the correctly
  rounded float32 square root (float64 has more than twice float32's precision plus two bits);
- the bias corrections ``1 - beta ** t`` come from running products, not ``pow`` from libm.

Everything else is elementwise IEEE arithmetic, which every CPU rounds alike once the kernels
are pinned (``make train PORTABLE=1``). See docs/model-history.md (candidates PT and PT2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class ExactAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov and Hutter) with a correctly rounded square root."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also takes the state of ``torch.optim.AdamW`` (checkpoints written before)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = self.state.get(p)
                if not state or "beta1_power" in state:
                    continue
                state["step"] = int(state["step"])
                state["beta1_power"], state["beta2_power"] = 1.0, 1.0
                for _ in range(state["step"]):
                    state["beta1_power"] *= beta1
                    state["beta2_power"] *= beta2

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ExactAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["beta1_power"] = 1.0
                    state["beta2_power"] = 1.0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                state["beta1_power"] *= beta1
                state["beta2_power"] *= beta2
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1.0 - lr * decay)
                m.lerp_(g, 1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                root = v.to(torch.float64).sqrt_().to(v.dtype)
                denom = root.div_(math.sqrt(1.0 - state["beta2_power"])).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1.0 - state["beta1_power"]))
        return loss


#: ``kplate train --optimizer NAME``: the optimiser class each name trains with (torch's AdamW
#: trained the shipped weights).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "exact": ExactAdamW,
}

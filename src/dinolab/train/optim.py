"""The optimizers a config can name: AdamW (DINO's ViTs), SGD and LARS (DINO's ResNet-50).

All take the groups of `param_groups` (their ``weight_decay`` is set each step by
`apply_optim_schedules`, so biases and norms, at multiplier 0, are never decayed) and start at
lr 0: the trainer's schedules set the real values before the first step.
"""

from __future__ import annotations

from typing import Any

import torch

OPTIMIZERS = ("adamw", "sgd", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), the variant
    of Barlow Twins that DINO's utils.LARS uses.

    For each parameter of 2+ dimensions the update ``g + wd * p`` is rescaled by the trust ratio
    ``eta * ||p|| / ||g + wd * p||`` (1 when either norm is 0); 1-D parameters (biases, norm
    weights) get neither weight decay nor scaling. Then ``mu = momentum * mu + update`` and
    ``p -= lr * mu``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(param_norm)
                    ratio = group["eta"] * param_norm / update_norm
                    trust = torch.where((param_norm > 0) & (update_norm > 0), ratio, one)
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(update)
                p.add_(mu, alpha=-group["lr"])
        return loss


def build_optimizer(name: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``adamw``, ``sgd`` (momentum 0.9) or ``lars`` over parameter groups, at lr 0.

    AdamW runs PyTorch's fused kernel: one pass over each tensor, where the default CPU path
    runs its elementwise ops one after another (its step alone 3.7x cheaper, benchmarks/README).
    """
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9, weight_decay=0.0)
    if name == "lars":
        return LARS(groups)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")

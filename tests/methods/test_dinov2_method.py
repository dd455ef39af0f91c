"""DINOv2 method: mask wiring, per-step masks, the loss against a restatement of the reference,
centering options, heads, and the Trainer's optimizer groups under the DINOv2 preset."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.methods import StepContext
from dinolab.methods.dinov2 import DINOv2
from dinolab.train.config import ConfigError, build_config
from dinolab.train.param_groups import apply_optim_schedules
from dinolab.train.trainer import Trainer

TINY = [
    "method=dinov2",
    "model.arch=vit_tiny",
    "model.patch_size=8",
    "model.depth=2",
    "model.drop_path_rate=0.0",
    "model.num_register_tokens=4",
    "head.out_dim=64",
    "head.hidden_dim=32",
    "head.bottleneck_dim=16",
    "crops.global_size=48",
    "crops.local_size=16",
    "crops.n_local=2",
    "optim.batch_size=4",
]


def tiny_method(*extra: str) -> DINOv2:
    torch.manual_seed(0)
    method = DINOv2(build_config([*TINY, *extra]))
    return method.train()


def random_batch(n_images: int = 4, global_size: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "global_crops": torch.randn(2 * n_images, 3, global_size, global_size, generator=g),
        "local_crops": torch.randn(2 * n_images, 3, 16, 16, generator=g),
    }


def capture_block_inputs(network) -> list[torch.Tensor]:
    """The token sequences entering the first block, one per forward_features call."""
    seen: list[torch.Tensor] = []
    network.backbone.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    return seen


def test_student_sees_mask_token_only_at_masked_global_patches_teacher_never():
    method = tiny_method()
    backbone = method.student.backbone
    with torch.no_grad():
        backbone.mask_token.normal_()  # distinct from any patch embedding
        method.teacher.backbone.mask_token.copy_(backbone.mask_token)
    batch = random_batch()
    student_in = capture_block_inputs(method.student)
    teacher_in = capture_block_inputs(method.teacher)
    method(batch, StepContext(step=7, teacher_temp=0.04))
    masks = method.draw_masks(batch["global_crops"], 7)
    assert 0 < masks.sum() < masks.numel()

    r = 1 + backbone.num_register_tokens
    with torch.no_grad():
        pos = backbone.pos_embed[:, 1:]
        plain = backbone.patch_embed(batch["global_crops"]) + pos
        masked = (backbone.mask_token + pos).expand_as(plain)
        local_pos = backbone.interpolate_pos_encoding(16, 16)[:, 1:]
        plain_local = backbone.patch_embed(batch["local_crops"]) + local_pos
    student_global, student_local = student_in
    (teacher_global,) = teacher_in
    expected = torch.where(masks.unsqueeze(-1), masked, plain)
    torch.testing.assert_close(student_global[:, r:], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(teacher_global[:, r:], plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(student_local[:, r:], plain_local, rtol=0, atol=1e-6)
    # and the mask token really differs from what the teacher sees at those positions
    assert (teacher_global[:, r:][masks] - masked[masks]).abs().amax(dim=-1).gt(1e-3).all()


def test_masks_are_drawn_per_step_from_the_seed():
    method = tiny_method()
    crops = torch.zeros(8, 3, 48, 48)
    masks = method.draw_masks(crops, 3)
    assert masks.shape == (8, 36) and masks.dtype == torch.bool
    assert torch.equal(masks, method.draw_masks(crops, 3))
    assert not torch.equal(masks, method.draw_masks(crops, 4))
    assert not torch.equal(masks, tiny_method("seed=1").draw_masks(crops, 3))
    # half of the global crops are masked (mask_probability 0.5), each with at most 0.5 x 36
    per_crop = masks.sum(dim=1)
    assert (per_crop > 0).sum() == 4 and per_crop.max() <= 18
    # the grid follows the crop size (high-resolution phase)
    assert method.draw_masks(torch.zeros(8, 3, 64, 64), 3).shape == (8, 64)


def _sinkhorn(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    q = torch.exp(logits / temp).t()
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def _koleo(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=-1, eps=1e-8)
    dist = torch.cdist(x, x) + torch.diag(torch.full((len(x),), math.inf, dtype=x.dtype))
    return -torch.log(dist.min(dim=1).values + 1e-8).mean()


@pytest.mark.parametrize("separate_head", [False, True])
def test_loss_equals_a_restatement_of_the_reference(separate_head):
    weights = ("dinov2.dino_loss_weight=0.5", "dinov2.ibot_loss_weight=2.0",
               "dinov2.koleo_loss_weight=0.3")  # fmt: skip
    extra = [*weights, f"dinov2.ibot_separate_head={separate_head}", "dinov2.ibot_out_dim=48"]
    method = tiny_method(*extra)
    batch, temp, step = random_batch(), 0.05, 11
    losses = method(batch, StepContext(step=step, teacher_temp=temp))

    b, n_crops, student_temp = 4, 4, 0.1
    masks = method.draw_masks(batch["global_crops"], step)
    idx = torch.nonzero(masks.flatten()).flatten()
    with torch.no_grad():
        t = method.teacher(batch["global_crops"], None, None, idx)
        s = method.student(batch["global_crops"], batch["local_crops"], masks, idx)
    assert s["patch_logits"].shape == (len(idx), 48 if separate_head else 64)
    t_cls = _sinkhorn(t["cls_logits"].double(), temp).reshape(2, b, -1)
    log_s = F.log_softmax(s["cls_logits"].double() / student_temp, dim=-1).reshape(n_crops, b, -1)
    pairs = [(iq, v) for iq in range(2) for v in range(n_crops) if v != iq]
    dino = sum(-(t_cls[iq] * log_s[v]).sum(-1).mean() for iq, v in pairs) / len(pairs)

    t_patch = _sinkhorn(t["patch_logits"].double(), temp)
    log_p = F.log_softmax(s["patch_logits"].double() / student_temp, dim=-1)
    n_patches = masks.shape[1]
    ibot = ibot_entropy = 0.0
    for j, flat in enumerate(idx.tolist()):
        crop = flat // n_patches
        ibot += -(t_patch[j] * log_p[j]).sum() / masks[crop].sum()
        ibot_entropy += -(t_patch[j] * t_patch[j].log()).sum() / masks[crop].sum()
    ibot, ibot_entropy = ibot / (2 * b), ibot_entropy / (2 * b)  # all global crops count

    koleo = sum(_koleo(c) for c in s["cls"].double().chunk(2))
    total = 0.5 * dino + 2.0 * ibot + 0.3 * koleo
    expected = {"dino_loss": dino, "ibot_loss": ibot, "koleo_loss": koleo / 2,
                "ibot_kl_teacher_student": ibot - ibot_entropy}  # fmt: skip
    for key, value in expected.items():
        torch.testing.assert_close(losses[key].double(), value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss"].double(), total, rtol=1e-5, atol=1e-6)
    assert losses["masked_patches"] == len(idx) > 0


def test_ema_centering_option_updates_both_centers_sinkhorn_leaves_them():
    batch = random_batch()
    sinkhorn = tiny_method()
    sinkhorn(batch, StepContext(step=0, teacher_temp=0.04))
    assert not sinkhorn.dino_loss.center.any() and not sinkhorn.ibot_loss.center.any()
    ema = tiny_method("dinov2.centering=centering")
    first = ema(batch, StepContext(step=0, teacher_temp=0.04))
    assert ema.dino_loss.center.abs().sum() > 0 and ema.ibot_loss.center.abs().sum() > 0
    # the loss of a step uses the center from before it (DINO's order): step 0 saw zeros
    with torch.no_grad():
        masks = ema.draw_masks(batch["global_crops"], 0)
        idx = torch.nonzero(masks.flatten()).flatten()
        t = ema.teacher(batch["global_crops"], None, None, idx)
    expected = 0.1 * t["cls_logits"].mean(dim=0, keepdim=True)  # 0.9 x 0 + 0.1 x batch mean
    torch.testing.assert_close(ema.dino_loss.center, expected, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(first["loss"])


def test_ibot_off_means_no_masks_and_a_frozen_mask_token():
    method = tiny_method("dinov2.ibot_loss_weight=0")
    losses = method(random_batch(), StepContext(step=0, teacher_temp=0.04))
    assert "ibot_loss" not in losses
    assert not method.student.backbone.mask_token.requires_grad
    assert method.student.ibot_head is None


def test_koleo_with_one_image_per_process_is_a_clear_error():
    method = tiny_method()
    with pytest.raises(ValueError, match="koleo_loss_weight=0"):
        method(random_batch(n_images=1), StepContext(step=0, teacher_temp=0.04))
    no_koleo = tiny_method("dinov2.koleo_loss_weight=0")
    assert "koleo_loss" not in no_koleo(
        random_batch(n_images=1), StepContext(step=0, teacher_temp=0.04)
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dinov2.centering=softmax", "sinkhorn_knopp, centering"),
        ("dinov2.ibot_loss_weight=-1", "0 or more"),
        ("dinov2.mask_ratio=[0.5,0.1]", "0 <= min <= max <= 1"),
        ("crops.highres_fraction=0.2", "crops.highres_global_size=96"),
        ("crops.highres_global_size=50", "multiple of model.patch_size=8"),
    ],
)
def test_bad_dinov2_config_values_are_named(override, message):
    extra = ["crops.highres_fraction=0.1"] if "highres_global_size" in override else []
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        build_config([*TINY, *extra, override])


def test_trainer_groups_with_the_dinov2_preset(tmp_path):
    """Real optimizer groups of a 12-block ViT under vit_small_dinov2: lr factor per parameter."""
    cfg = build_config([
        "preset=vit_small_dinov2", "model.arch=vit_tiny", "head.out_dim=64",
        "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=2",
        "optim.freeze_last_layer_iters=3", "device=cpu", f"out={tmp_path}",
    ])  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(cfg, DINOv2(cfg), dataset=[0, 1], collate_fn=None)
    assert [name for name, _ in trainer.student.named_children()] == ["backbone", "dino_head"]

    def expected(name: str) -> float:
        if name.startswith("backbone.blocks."):
            return 0.9 ** (12 - int(name.split(".")[2]))
        if name.startswith("backbone.patch_embed."):
            return 0.9**13 * 0.2
        if name.split(".")[1] in ("cls_token", "pos_embed", "register_tokens", "mask_token"):
            return 0.9**13
        return 1.0  # final norm, heads

    seen = set()
    for group in trainer.optimizer.param_groups:
        for name in group["names"]:
            assert group["lr_multiplier"] == pytest.approx(expected(name), rel=1e-12), name
            assert group["is_last_layer"] == name.startswith("dino_head.last_layer"), name
            seen.add(name)
    trained = {n for n, p in trainer.student.named_parameters() if p.requires_grad}
    assert seen == trained and "backbone.register_tokens" in seen
    peak = 0.004 * math.sqrt(2 / 1024)  # sqrt scaling from a batch of 1024
    assert trainer.schedules.lr.max() == pytest.approx(peak)
    for step, last_layer_frozen in ((2, True), (3, False)):
        lr, wd = float(trainer.schedules.lr[step]), float(trainer.schedules.wd[step])
        apply_optim_schedules(
            trainer.optimizer, lr, wd, float(trainer.schedules.last_layer_lr[step])
        )
        for group in trainer.optimizer.param_groups:
            base = 0.0 if group["is_last_layer"] and last_layer_frozen else lr
            assert group["lr"] == pytest.approx(base * group["lr_multiplier"])


def test_giant_preset_builds_swiglu_blocks_and_a_separate_ibot_head():
    cfg = build_config([
        "preset=vit_giant2_dinov2", "model.depth=1", "head.out_dim=64", "head.hidden_dim=32",
        "dinov2.ibot_out_dim=48", "optim.batch_size=2",
    ])  # fmt: skip
    torch.manual_seed(0)
    method = DINOv2(cfg)
    backbone = method.student.backbone
    assert (backbone.embed_dim, backbone.patch_size, backbone.num_register_tokens) == (1536, 14, 4)
    assert type(backbone.blocks[0].mlp).__name__ == "SwiGLUFFN"
    assert backbone.blocks[0].mlp.w3.in_features == 4096  # the official fused width of 6144
    assert method.student.ibot_head.last_layer.weight.shape == (48, 256)
    assert method.student.dino_head.last_layer.weight.shape == (64, 384)
    names = [name for name, _ in method.student.named_children()]
    assert names == ["backbone", "dino_head", "ibot_head"]  # clipped one by one (per_module)


def test_large_dinov3_preset_builds_a_rope_vit_l16_trained_sharded():
    cfg = build_config([
        "preset=vit_large_dinov3", "model.depth=1", "head.out_dim=64", "head.hidden_dim=32",
        "dinov2.ibot_out_dim=48", "optim.batch_size=2",
    ])  # fmt: skip
    assert (cfg.dist.strategy, cfg.model.grad_checkpointing) == ("fsdp", True)
    torch.manual_seed(0)
    method = DINOv2(cfg)
    backbone = method.student.backbone
    assert (backbone.embed_dim, backbone.patch_size, backbone.num_register_tokens) == (1024, 16, 0)
    assert backbone.pos_embed is None and backbone.rope_embed is not None
    assert type(backbone.blocks[0].mlp).__name__ == "Mlp"
    assert method.student.ibot_head.last_layer.weight.shape == (48, 256)
    assert method.student.dino_head.last_layer.weight.shape == (64, 256)

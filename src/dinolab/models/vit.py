"""Vision Transformer backbone that holds the official DINO, DINOv2 and DINOv3 weights.

Token layout: ``[CLS, reg_1..reg_R, patch_1..patch_P]``; registers carry no position embedding.
Blocks are a flat ``blocks.N`` list (the official ``block_chunks=0`` layout).

Two position encodings (``pos_embed``):

- ``"learned"`` (DINO, DINOv2): a ``pos_embed`` table for the native grid, added to [CLS] and
  the patches, resampled bicubically at other sizes; registers are ``register_tokens``.
- ``"rope"`` (DINOv3): no table; queries and keys of the patch tokens are rotated in every block
  (`dinolab.models.rope`, buffer ``rope_embed.periods``), so any input size works as it is.
  Registers are DINOv3's ``storage_tokens``; with ``untie_cls_and_patch_norms`` [CLS] and the
  storage tokens get their own final norm (``cls_norm``). ``untie_global_and_local_cls_norm``
  adds ``local_cls_norm``, which the official code applies to local crops' [CLS] in training
  only: dinolab holds its weights (the 7B's file loads and exports strictly) and never applies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dinolab.models.backbone import FeatureDict
from dinolab.models.layers import Block, PatchEmbed, Rope
from dinolab.models.resample import resample_grid
from dinolab.models.rope import RopePositionEmbedding

POS_EMBEDS = ("learned", "rope")


class VisionTransformer(nn.Module):
    """ViT with the official DINOv2 constructor keywords (and DINOv3's, named in dinolab's
    words: ``n_storage_tokens`` is ``num_register_tokens``, ``layerscale_init`` ``init_values``)
    and the official parameter names.

    ``model.config`` keeps the constructor keywords (JSON-able) so that
    ``VisionTransformer(**model.config)`` rebuilds the same architecture (export/load use it).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ffn_bias: bool = True,
        proj_bias: bool = True,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        init_values: float | None = None,
        ffn_layer: str = "mlp",
        num_register_tokens: int = 0,
        interpolate_antialias: bool = False,
        interpolate_offset: float = 0.1,
        pos_embed: str = "learned",
        rope_base: float = 100.0,
        rope_normalize_coords: str = "separate",
        rope_shift_coords: float | None = None,
        rope_jitter_coords: float | None = None,
        rope_rescale_coords: float | None = None,
        layer_norm_eps: float = 1e-6,
        mask_k_bias: bool = False,
        ffn_align: int = 8,
        untie_cls_and_patch_norms: bool = False,
        untie_global_and_local_cls_norm: bool = False,
    ) -> None:
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"unknown pos_embed {pos_embed!r}; use one of {POS_EMBEDS}")
        if pos_embed == "learned" and (
            untie_cls_and_patch_norms or untie_global_and_local_cls_norm
        ):
            raise ValueError("untied [CLS] norms belong to the DINOv3 layout: use pos_embed='rope'")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {num_register_tokens}")
        self.config: dict[str, Any] = {
            "img_size": int(img_size),
            "patch_size": int(patch_size),
            "in_chans": int(in_chans),
            "embed_dim": int(embed_dim),
            "depth": int(depth),
            "num_heads": int(num_heads),
            "mlp_ratio": float(mlp_ratio),
            "qkv_bias": bool(qkv_bias),
            "ffn_bias": bool(ffn_bias),
            "proj_bias": bool(proj_bias),
            "drop_path_rate": float(drop_path_rate),
            "drop_path_uniform": bool(drop_path_uniform),
            "init_values": None if init_values is None else float(init_values),
            "ffn_layer": str(ffn_layer),
            "num_register_tokens": int(num_register_tokens),
            "interpolate_antialias": bool(interpolate_antialias),
            "interpolate_offset": float(interpolate_offset),
            "pos_embed": str(pos_embed),
            "rope_base": float(rope_base),
            "rope_normalize_coords": str(rope_normalize_coords),
            "rope_shift_coords": _optional_float(rope_shift_coords),
            "rope_jitter_coords": _optional_float(rope_jitter_coords),
            "rope_rescale_coords": _optional_float(rope_rescale_coords),
            "layer_norm_eps": float(layer_norm_eps),
            "mask_k_bias": bool(mask_k_bias),
            "ffn_align": int(ffn_align),
            "untie_cls_and_patch_norms": bool(untie_cls_and_patch_norms),
            "untie_global_and_local_cls_norm": bool(untie_global_and_local_cls_norm),
        }
        self.num_features = self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.n_blocks = depth
        # Recompute each block's activations in backward instead of storing them (less memory).
        self.grad_checkpointing = False
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset
        self.grid_size = img_size // patch_size

        self.uses_rope = pos_embed == "rope"

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        registers = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            if num_register_tokens
            else None
        )
        self.pos_embed: nn.Parameter | None = None
        self.register_tokens: nn.Parameter | None = None
        self.storage_tokens: nn.Parameter | None = None
        self.rope_embed: RopePositionEmbedding | None = None
        if self.uses_rope:
            self.storage_tokens = registers
            self.rope_embed = RopePositionEmbedding(
                embed_dim,
                num_heads,
                base=rope_base,
                normalize_coords=rope_normalize_coords,
                shift_coords=rope_shift_coords,
                jitter_coords=rope_jitter_coords,
                rescale_coords=rope_rescale_coords,
            )
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2 + 1, embed_dim))
            self.register_tokens = registers
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

        if drop_path_uniform:
            rates = [float(drop_path_rate)] * depth
        else:
            rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                ffn_bias=ffn_bias,
                init_values=init_values,
                drop_path=rate,
                ffn_layer=ffn_layer,
                ffn_align=ffn_align,
                layer_norm_eps=layer_norm_eps,
                mask_k_bias=mask_k_bias,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.cls_norm = (
            nn.LayerNorm(embed_dim, eps=layer_norm_eps) if untie_cls_and_patch_norms else None
        )
        self.local_cls_norm = (
            nn.LayerNorm(embed_dim, eps=layer_norm_eps) if untie_global_and_local_cls_norm else None
        )
        self.init_weights()

    def init_weights(self) -> None:
        """The reference init: trunc-normal(0.02) for linears, pos_embed and [CLS]; registers
        at 1e-6 (DINOv2), storage tokens at 0.02 (DINOv3)."""
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        if self.storage_tokens is not None:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- tokens
    def rope(self, x: Tensor) -> Rope | None:
        """RoPE (sin, cos) for the patch grid of images ``x`` (B, C, H, W); None without RoPE.
        Called once per block, as the official code does: in training each block draws its own
        coordinate noise."""
        if self.rope_embed is None:
            return None
        return self.rope_embed(x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)

    def interpolate_pos_encoding(self, height: int, width: int) -> Tensor:
        """Position embeddings for an input of ``height x width`` pixels.

        At the native grid the parameter itself is returned (no resampling error). Otherwise the
        patch part is resized bicubically: with ``interpolate_offset > 0`` by the scale factor
        ``(n + offset) / M`` (DINO / DINOv2), with offset 0 to the exact size (register models):
        see `resample_pos_embed`.
        """
        if self.pos_embed is None:
            raise ValueError("a RoPE ViT has no position-embedding table to resample")
        h0, w0 = height // self.patch_size, width // self.patch_size
        if (h0, w0) == (self.grid_size,) * 2 and not torch.compiler.is_exporting():
            return self.pos_embed
        return resample_pos_embed(
            self.pos_embed, h0, w0, self.interpolate_offset, self.interpolate_antialias
        )

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Images -> tokens; masked patches become `mask_token` before position embedding."""
        b, _, h, w = x.shape
        tokens = self.patch_embed(x)
        if masks is not None:
            if masks.shape != tokens.shape[:2] or masks.dtype != torch.bool:
                raise ValueError(
                    f"masks must be a bool tensor of shape {tuple(tokens.shape[:2])} "
                    f"(batch, patches), got {masks.dtype} {tuple(masks.shape)}"
                )
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat((self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens), dim=1)
        if not self.uses_rope:
            tokens = tokens + self.interpolate_pos_encoding(h, w)
        registers = self.storage_tokens if self.uses_rope else self.register_tokens
        if registers is not None:
            regs = registers.expand(b, -1, -1).to(tokens.dtype)
            tokens = torch.cat((tokens[:, :1], regs, tokens[:, 1:]), dim=1)
        return tokens

    # --------------------------------------------------------------- outputs
    def final_norm(self, x: Tensor) -> Tensor:
        """The last norm of every token; with untied norms `cls_norm` for [CLS] and registers."""
        if self.cls_norm is None:
            return self.norm(x)
        r = self.num_register_tokens + 1
        return torch.cat((self.cls_norm(x[:, :r]), self.norm(x[:, r:])), dim=1)

    def _split(self, x: Tensor, masks: Tensor | None) -> FeatureDict:
        x_norm = self.final_norm(x)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1 : r + 1],
            "x_norm_patchtokens": x_norm[:, r + 1 :],
            "x_prenorm": x,
            "masks": masks,
        }

    @overload
    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> FeatureDict: ...

    @overload
    def forward_features(
        self, x: list[Tensor], masks: list[Tensor | None] | None = None
    ) -> list[FeatureDict]: ...

    def forward_features(
        self, x: Tensor | list[Tensor], masks: Tensor | list[Tensor | None] | None = None
    ) -> FeatureDict | list[FeatureDict]:
        """DINOv2 feature dict; a list of images (one tensor per resolution) gives a list."""
        if isinstance(x, Tensor):
            if isinstance(masks, list | tuple):
                raise TypeError("one image tensor takes one mask tensor (or None), not a list")
            tokens = self.prepare_tokens_with_masks(x, masks)
            rope = self.rope(x)
            recompute = self.grad_checkpointing and torch.is_grad_enabled()
            for blk in self.blocks:
                if recompute:
                    tokens = checkpoint(blk, tokens, rope, use_reentrant=False)
                else:
                    tokens = blk(tokens, rope)
            return self._split(tokens, masks)
        masks_list = [None] * len(x) if masks is None else list(masks)
        if len(masks_list) != len(x):
            raise ValueError(
                f"got {len(x)} image tensors but {len(masks_list)} masks; "
                "pass one mask (or None) per tensor"
            )
        return [self.forward_features(xi, mi) for xi, mi in zip(x, masks_list, strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        """[CLS] feature after the final norm, (B, embed_dim)."""
        return self.forward_features(x)["x_norm_clstoken"]

    def _block_indices(self, blocks: int | Sequence[int]) -> list[int]:
        depth = len(self.blocks)
        idx = list(range(depth - blocks, depth)) if isinstance(blocks, int) else list(blocks)
        bad = [i for i in idx if not -depth <= i < depth]
        if bad or (isinstance(blocks, int) and not 0 < blocks <= depth):
            raise ValueError(
                f"block indices {bad or blocks} out of range for a {depth}-block "
                f"model; use an int in 1..{depth} or indices in 0..{depth - 1}"
            )
        return [i % depth for i in idx]

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Tensor, ...] | tuple[tuple[Tensor, Tensor], ...]:
        """Patch tokens of the last ``n`` blocks (int) or of the listed blocks (DINOv2 semantics).

        ``reshape`` gives (B, C, H/p, W/p) maps; ``return_class_token`` pairs each with [CLS].
        """
        take = set(self._block_indices(n))
        tokens = self.prepare_tokens_with_masks(x)
        outputs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens, self.rope(x))
            if i in take:
                outputs.append(self.final_norm(tokens) if norm else tokens)
        cls = [o[:, 0] for o in outputs]
        patches = [o[:, 1 + self.num_register_tokens :] for o in outputs]
        if reshape:
            b, _, h, w = x.shape
            p = self.patch_size
            patches = [
                o.reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous() for o in patches
            ]
        if return_class_token:
            return tuple(zip(patches, cls, strict=True))
        return tuple(patches)

    def get_self_attention(self, x: Tensor, blocks: Sequence[int] | None = None) -> list[Tensor]:
        """Attention weights (B, heads, N, N) of the chosen blocks (default: all), in that order.

        N counts [CLS], registers and patches; negative indices count from the last block.
        Blocks after the last one asked for are not run.
        """
        idx = self._block_indices(range(len(self.blocks)) if blocks is None else blocks)
        wanted = set(idx)
        found: dict[int, Tensor] = {}
        tokens = self.prepare_tokens_with_masks(x)
        for i, blk in enumerate(cast(list[Block], self.blocks[: max(idx) + 1])):
            if i in wanted:
                tokens, found[i] = blk.forward_with_attention(tokens, self.rope(x))
            else:
                tokens = blk(tokens, self.rope(x))
        return [found[i] for i in idx]

    def get_last_self_attention(self, x: Tensor) -> Tensor:
        """Attention weights of the last block, (B, heads, N, N)."""
        return self.get_self_attention(x, [-1])[0]


def resample_pos_embed(
    pos_embed: Tensor, rows: int, cols: int, offset: float = 0.1, antialias: bool = False
) -> Tensor:
    """Position embeddings (1, 1 + M*M, D) of an M x M patch grid for a rows x cols grid.

    The [CLS] row stays; the grid is resized bicubically in float32, by the scale factor
    ``(n + offset) / M`` (DINO, DINOv2) or, with offset 0, to the exact size. Used by
    `VisionTransformer.interpolate_pos_encoding` and to start a model at another crop size.
    While exported (torch.export, ONNX) the numbers come from `resample_grid`, whose graph
    works at every input size.
    """
    pos = pos_embed.float()
    m, dim = math.isqrt(pos.shape[1] - 1), pos.shape[-1]
    grid = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if torch.compiler.is_exporting():
        grid = resample_grid(grid, rows, cols, offset, antialias)
    else:
        if offset:
            kwargs: dict[str, Any] = {"scale_factor": ((rows + offset) / m, (cols + offset) / m)}
        else:
            kwargs = {"size": (rows, cols)}
        grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(
                f"position embedding resized to {tuple(grid.shape[-2:])}, "
                f"expected {(rows, cols)}; use interpolate_offset=0.0"
            )
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat((pos[:, :1], grid), dim=1).to(pos_embed.dtype)


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _named(patch_size: int, size: dict[str, Any], overrides: dict[str, Any]) -> VisionTransformer:
    """A named size; `overrides` may change any of its values (e.g. a shallower `depth`)."""
    return VisionTransformer(patch_size=patch_size, **{**size, **overrides})


def vit_tiny(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """ViT-Ti: 192 wide, 12 blocks, 3 heads."""
    return _named(patch_size, dict(embed_dim=192, depth=12, num_heads=3), kwargs)


def vit_small(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """ViT-S: 384 wide, 12 blocks, 6 heads."""
    return _named(patch_size, dict(embed_dim=384, depth=12, num_heads=6), kwargs)


def vit_base(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """ViT-B: 768 wide, 12 blocks, 12 heads."""
    return _named(patch_size, dict(embed_dim=768, depth=12, num_heads=12), kwargs)


def vit_large(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """ViT-L: 1024 wide, 24 blocks, 16 heads."""
    return _named(patch_size, dict(embed_dim=1024, depth=24, num_heads=16), kwargs)


def vit_giant2(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """DINOv2's ViT-g: 1536 wide, 40 blocks, 24 heads (64 per head), SwiGLU feed-forward."""
    kwargs.setdefault("ffn_layer", "swiglufused")
    return _named(patch_size, dict(embed_dim=1536, depth=40, num_heads=24), kwargs)


def vit_huge2(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """DINOv3's ViT-H: 1280 wide, 32 blocks, 20 heads (64 per head)."""
    return _named(patch_size, dict(embed_dim=1280, depth=32, num_heads=20), kwargs)


def vit_7b(patch_size: int = 16, **kwargs: Any) -> VisionTransformer:
    """DINOv3's ViT-7B: 4096 wide, 40 blocks, 32 heads (128 per head), feed-forward ratio 3."""
    kwargs.setdefault("mlp_ratio", 3.0)
    return _named(patch_size, dict(embed_dim=4096, depth=40, num_heads=32), kwargs)


ARCHS: dict[str, Callable[..., VisionTransformer]] = {
    "vit_tiny": vit_tiny,
    "vit_small": vit_small,
    "vit_base": vit_base,
    "vit_large": vit_large,
    "vit_giant2": vit_giant2,
    "vit_huge2": vit_huge2,
    "vit_7b": vit_7b,
}

"""Block-wise iBOT masks and crop-by-crop collation."""

from __future__ import annotations

import torch

from dinolab.data import MaskGenerator, MultiCropCollate, collate_multicrop, draw_batch_masks


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_counts_stay_at_or_below_target_and_close_to_it() -> None:
    gen, g = MaskGenerator(14), _g(1)
    assert not gen(0, g).any()
    for target in (20, 59, 98):
        counts = [int(gen(target, g).sum()) for _ in range(40)]
        assert max(counts) <= target
        assert sum(counts) / len(counts) >= 0.85 * target
    rect = MaskGenerator((8, 12))(30, g)
    assert rect.shape == (8, 12) and rect.dtype == torch.bool


def test_single_blocks_are_rectangles_within_bounds() -> None:
    gen, g = MaskGenerator(14), _g(2)
    for _ in range(200):
        mask = torch.zeros(14, 14, dtype=torch.bool)
        added = gen._add_block(mask, 60, g)
        assert 0 < added <= 60
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # one rectangle
        assert h * w == added and h < 14 and w < 14
        # at least 4 patches and aspect 0.3..3.3 before rounding to whole patches
        assert h * w >= 3 and 0.3 / 1.8 <= h / w <= 3.34 * 1.8


def test_masks_are_deterministic_given_a_generator() -> None:
    gen = MaskGenerator(14)
    assert torch.equal(gen(50, _g(3)), gen(50, _g(3)))
    assert not torch.equal(gen(50, _g(3)), gen(50, _g(4)))


def test_batch_masks_share_and_stratified_ratios() -> None:
    gen, n, tokens = MaskGenerator(16), 10, 256
    masks = draw_batch_masks(n, gen, 0.5, (0.1, 0.5), _g(5))
    counts = masks.sum(1)
    assert masks.shape == (n, tokens) and int((counts > 0).sum()) == 5
    # one ratio per bin of [0.1, 0.5] split in 5: the i-th smallest lies in bin i
    edges = torch.linspace(0.1, 0.5, 6) * tokens
    for i, c in enumerate(sorted(counts[counts > 0].tolist())):
        assert 0.8 * edges[i] <= c <= edges[i + 1], (i, c)
    # shuffled: the masked crops are not always the first ones
    firsts = {
        tuple((draw_batch_masks(n, gen, 0.5, generator=_g(s)).sum(1) > 0).tolist())
        for s in range(6)
    }
    assert len(firsts) > 1


def _samples(b: int, n_local: int) -> list:
    """Crop c of image i is filled with 100 * i + c, so positions can be read back."""
    out = []
    for i in range(b):
        crops = [torch.full((3, 8, 8), 100.0 * i + c) for c in range(2)]
        crops += [torch.full((3, 4, 4), 100.0 * i + 2 + c) for c in range(n_local)]
        out.append((crops, i + 10))
    return out


def test_collate_orders_crop_by_crop() -> None:
    b = collate_multicrop(_samples(3, 4))
    assert b["global_crops"].shape == (6, 3, 8, 8) and b["local_crops"].shape == (12, 3, 4, 4)
    assert b["labels"].tolist() == [10, 11, 12] and (b["n_global"], b["n_local"]) == (2, 4)
    g_vals = b["global_crops"][:, 0, 0, 0].tolist()
    assert g_vals == [0, 100, 200, 1, 101, 201]  # all images' crop 0, then crop 1
    l_vals = b["local_crops"][:, 0, 0, 0].tolist()
    assert l_vals == [100 * i + 2 + c for c in range(4) for i in range(3)]
    assert collate_multicrop(_samples(2, 0))["local_crops"] is None


def test_batch_masks_are_deterministic_given_a_generator() -> None:
    gen = MaskGenerator(4)
    masks = draw_batch_masks(8, gen, generator=_g(6))
    assert masks.shape == (8, 16) and masks.dtype == torch.bool
    assert int((masks.sum(1) > 0).sum()) == 4  # half the crops masked
    assert torch.equal(draw_batch_masks(8, gen, generator=_g(6)), masks)
    assert not torch.equal(draw_batch_masks(8, gen, generator=_g(7)), masks)


def test_collate_callable_in_a_dataloader() -> None:
    data = _samples(6, 2)
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=MultiCropCollate())
    batches = list(loader)
    assert len(batches) == 2 and batches[1]["global_crops"][0, 0, 0, 0] == 300
    assert batches[0]["local_crops"].shape[0] == 6 and "masks" not in batches[0]

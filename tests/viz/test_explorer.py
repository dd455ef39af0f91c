"""`dinolab explore`: the page's embedded numbers, and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Browser
from PIL import Image
from test_report import chromium

from dinolab.cli import main
from dinolab.data.images import prepare_image
from dinolab.eval.attention import attention_maps, mass_mask
from dinolab.hub import export_backbone
from dinolab.models import VisionTransformer, build_model
from dinolab.viz.explorer import write_explorer
from dinolab.viz.pca import patch_features

# The page's attention weights are within this share of the model's (int8 factors, README)
RELATIVE_TOLERANCE = 0.05
# and its cosine similarities within this of the model's (int8 unit features)
COSINE_TOLERANCE = 0.02


@pytest.fixture
def register_vit() -> VisionTransformer:
    """Random 3-block ViT with 2 registers, 16 px patches, native 64 px."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=3, num_heads=3,
                             num_register_tokens=2).eval()  # fmt: skip


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Three images of different sizes (4x6, 5x4 and 4x4 patch grids at 64 px) and an
    unreadable file."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 96), (80, 64), (64, 64)]):
        yy, xx = np.mgrid[0:h, 0:w]
        blob = ((yy - h / 2) ** 2 + (xx - w / 3 - 8 * i) ** 2 < 300)[..., None]
        pixels = np.where(blob, [220, 60, 30], [40, 90, 160]) + rng.normal(0, 20, (h, w, 3))
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    return [*paths[:1], tmp_path / "broken.jpg", *paths[1:]]


def read_page(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The page's metadata and its embedded arrays, decoded as its script decodes them."""
    text = path.read_text()
    meta = json.loads(re.search(r'id="explorer-meta">(.*?)</script>', text, re.S)[1])
    data = base64.b64decode(re.search(r'id="explorer-data">(.*?)</script>', text, re.S)[1])
    arrays = {}
    for name, (offset, dtype, shape) in meta["arrays"].items():
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
    return meta, arrays


def model_attention(vit, image, token: int, block: int) -> np.ndarray:
    """(heads, N) the model's own attention row of ``token`` in ``block``."""
    with torch.inference_mode():
        return vit.get_self_attention(image.tensor, [block])[0][0, :, token].numpy()


def test_embedded_maps_equal_eval_attention_and_unreadable_images_are_skipped(
    register_vit, photos, tmp_path
) -> None:
    with pytest.warns(RuntimeWarning, match="skipping unreadable image .*broken.jpg"):
        page = write_explorer(register_vit, photos, tmp_path / "out" / "explore.html")
    meta, arrays = read_page(page)
    assert [im["name"] for im in meta["images"]] == ["photo0", "photo1", "photo2"]
    assert [im["grid"] for im in meta["images"]] == [[4, 6], [5, 4], [4, 4]]
    assert (meta["blocks"], meta["heads"], meta["registers"]) == (3, 3, 2)
    assert meta["rank"] == meta["headWidth"] == 16  # a small page keeps every factor column
    assert "http" not in page.read_text()  # nothing to fetch: no CDN, no font, no link
    assert not list(page.parent.glob(".*.tmp"))  # written atomically
    image = prepare_image(photos[2], 16, 64)  # photo1, 5x4 patches
    left = arrays["left_1"] * arrays["left_scale_1"][..., None]
    right = arrays["right_1"] * arrays["right_scale_1"][..., None]
    for block in range(3):
        for query in (None, (0.1, 0.1), (0.6, 0.9)):
            maps = attention_maps(register_vit, image, query=query, block=block)
            token = 0 if maps.query is None else 3 + maps.query[0] * 4 + maps.query[1]
            logits = np.einsum("hr,hnr->hn", left[block, :, token], right[block])[:, 3:]
            heads = np.exp(logits - logits.max(axis=1, keepdims=True))
            heads = (heads / heads.sum(axis=1, keepdims=True)).reshape(maps.heads.shape)
            assert np.allclose(heads, maps.heads, rtol=RELATIVE_TOLERANCE, atol=0)
    features = patch_features(register_vit, image)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    embedded = arrays["feat_1"] * arrays["feat_scale_1"][:, None]
    assert np.abs(embedded - unit).max() <= arrays["feat_scale_1"].max() / 2 + 1e-6


def test_a_page_size_bound_keeps_fewer_factor_columns(register_vit, photos, tmp_path) -> None:
    readable = [photos[0], *photos[2:]]
    full = write_explorer(register_vit, readable, tmp_path / "full.html").stat().st_size
    bound = 0.9 * full / 1e6
    page = write_explorer(register_vit, readable, tmp_path / "small.html", max_mb=bound)
    meta, arrays = read_page(page)
    assert 1 <= meta["rank"] < 16 and arrays["left_0"].shape[-1] == meta["rank"]
    assert page.stat().st_size <= bound * 1e6
    with pytest.raises(ValueError, match="does not fit .*--max-mb"):
        write_explorer(register_vit, readable, tmp_path / "tiny.html", max_mb=0.01)


def test_explore_command_and_a_convnet_page(tmp_path, photos, capsys) -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", stem="cifar", img_size=32).eval()
    export_backbone(resnet, tmp_path / "resnet.safetensors")
    out = tmp_path / "explore.html"
    assert main(["explore", str(tmp_path / "resnet.safetensors"), *map(str, photos),
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert str(out) in printed.out and "skipping unreadable image" in printed.err
    meta, arrays = read_page(out)
    assert "convnet" in meta["noAttention"] and meta["blocks"] == 0
    assert not [name for name in arrays if name.startswith("left_")]
    assert [im["grid"] for im in meta["images"]] == [[4, 6], [5, 4], [4, 4]]  # stride 8 at 32 px


def _centre_of_patch(
    browser: Browser, canvas: str, row: int, col: int, grid
) -> tuple[float, float]:
    rect = browser.evaluate(
        f"(() => {{ const r = document.getElementById('{canvas}').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    h, w = grid
    return rect[0] + (col + 0.5) * rect[2] / w, rect[1] + (row + 0.5) * rect[3] / h


def _assert_drawn_attention(drawn: dict, vit, image, token: int, block: int) -> None:
    """The page's attention for ``token`` equals the model's; its masks are `mass_mask`'s."""
    row = model_attention(vit, image, token, block)
    heads = row[:, 3:] / row[:, 3:].sum(axis=1, keepdims=True)
    page = np.array(drawn["attention"]["heads"])
    assert np.allclose(page, heads, rtol=RELATIVE_TOLERANCE, atol=0)
    assert np.allclose(drawn["attention"]["share"], row[:, 3:].sum(axis=1), rtol=RELATIVE_TOLERANCE)
    mean = np.array(drawn["attention"]["mean"])
    assert np.allclose(mean, page.mean(axis=0))
    assert drawn["attention"]["meanMask"] == mass_mask(mean, 0.6).astype(int).tolist()
    assert drawn["attention"]["masks"] == mass_mask(page, 0.6).astype(int).tolist()


def test_page_in_chromium_draws_the_models_numbers_offline(register_vit, photos, tmp_path) -> None:
    binary = chromium()
    with pytest.warns(RuntimeWarning, match="skipping unreadable"):
        page = write_explorer(register_vit, photos, tmp_path / "explore.html")
    images = [prepare_image(p, 16, 64) for p in (photos[0], photos[2], photos[3])]
    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.open(page)
        browser.wait_for("window.explorer && window.explorer.ready")
        drawn = lambda: browser.evaluate(  # noqa: E731
            "JSON.parse(JSON.stringify(explorer.drawn, (k, v) => ArrayBuffer.isView(v) ? "
            "Array.from(v) : v))"
        )
        assert drawn()["token"] == 0  # [CLS] of the first image is the default view
        _assert_drawn_attention(drawn(), register_vit, images[0], 0, 2)

        # a real click on patch (row 3, col 1) of the second image (5x4 patches) in the grid
        browser.click(*_centre_of_patch(browser, "grid-1", 3, 1, (5, 4)))
        now = drawn()
        token = 3 + 3 * 4 + 1
        assert (now["image"], now["token"], now["block"]) == (1, token, 2)
        _assert_drawn_attention(now, register_vit, images[1], token, 2)
        query = patch_features(register_vit, images[1])[token - 3]
        for i, image in enumerate(images):
            features = patch_features(register_vit, image)
            cosine = features @ query / np.linalg.norm(features, axis=1) / np.linalg.norm(query)
            assert np.abs(np.array(now["similarity"][i]) - cosine).max() < COSINE_TOLERANCE
            if i != 1:
                assert now["best"][i] == int(np.argmax(now["similarity"][i]))

        # the mean map is drawn with the colour map of its own range, one square per patch
        pixels = browser.evaluate(
            "(() => { const c = document.getElementById('map-mean'), s = +c.dataset.cell;"
            " const x = c.getContext('2d'); const out = [];"
            " for (let p = 0; p < 20; p++) out.push(Array.from(x.getImageData("
            "(p % 4) * s + s / 2, Math.floor(p / 4) * s + s / 2, 1, 1).data.slice(0, 3)));"
            " return out; })()"
        )
        mean = np.array(now["attention"]["mean"])
        lut = np.array(browser.evaluate("Array.from(explorer.lut)")).reshape(256, 3)
        index = np.rint(255 * (mean - mean.min()) / (mean.max() - mean.min())).astype(int)
        assert np.abs(np.array(pixels) - lut[index]).max() <= 1

        # the layer slider: block 0 gives block 0's attention, and it differs from block 2's
        browser.evaluate("(() => { const b = document.getElementById('block'); b.value = 0;"
                         " b.dispatchEvent(new Event('input')); })()")  # fmt: skip
        first = drawn()
        assert first["block"] == 0
        _assert_drawn_attention(first, register_vit, images[1], token, 0)
        assert not np.allclose(first["attention"]["heads"], now["attention"]["heads"], rtol=0.05)

        # registers shown: their weights join the patches' (one more row of cells)
        browser.evaluate("document.getElementById('registers').click()")
        shown = drawn()
        row = model_attention(register_vit, images[1], token, 0)[:, 1:]
        row = row / row.sum(axis=1, keepdims=True)
        assert np.allclose(shown["attention"]["registers"], row[:, :2], rtol=RELATIVE_TOLERANCE)
        assert np.allclose(shown["attention"]["heads"], row[:, 2:], rtol=RELATIVE_TOLERANCE)
        height = browser.evaluate("document.getElementById('map-mean').height")
        assert height == 6 * int(
            browser.evaluate("document.getElementById('map-mean').dataset.cell")
        )

        # "follow the mouse": moving over a patch of the third image (4x4) queries it
        browser.evaluate("document.getElementById('hover').click()")
        x, y = _centre_of_patch(browser, "grid-2", 1, 2, (4, 4))
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        assert (drawn()["image"], drawn()["token"]) == (2, 3 + 1 * 4 + 2)

        urls = browser.requested_urls()
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    finally:
        browser.close()

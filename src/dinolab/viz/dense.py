"""Pictures and files of the dense evaluations: class masks over images, the probe's confusion
matrix, and what the commands write: `dinolab segment` (its JSON, pictures, `--predict` masks),
`dinolab discover` (boxes, masks, overlays), `dinolab propagate` (masks, frame strips, J&F).

Masks are drawn in the VOC palette (the colours their PNGs carry), half over the image; 255
(ignore) shows as the palette's near-white.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dinolab.data.decode import load_image
from dinolab.data.images import list_images, model_short_side
from dinolab.data.mask_pairs import list_mask_pairs, voc_palette, write_index_mask
from dinolab.device import resolve_device
from dinolab.eval.object_discovery import discover_image
from dinolab.eval.patch_features import model_patch_features
from dinolab.eval.propagation import PropagationResult, propagate_folders, sequence_folders
from dinolab.eval.segmentation_probe import (
    ProbeScores,
    SegmentProbe,
    SegmentProbeResult,
    run_segment,
)
from dinolab.hub import load_model
from dinolab.io import atomic_write, atomic_write_text
from dinolab.models.backbone import as_backbone
from dinolab.viz.classification import plot_confusion_matrix
from dinolab.viz.images import blank_axes, new_figure, save_figure, unique_names

PALETTE = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)
CONFUSION_PICTURE = "segment_confusion.png"
EXAMPLES_PICTURE = "segment_examples.png"


def mask_overlay(pixels: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image (H, W, 3 uint8) with the mask's palette colours blended in where it is not 0."""
    colours = PALETTE[np.asarray(mask, dtype=np.uint8)]
    blend = np.where((mask > 0)[..., None], (1 - alpha) * pixels + alpha * colours, pixels)
    return np.clip(blend, 0, 255).astype(np.uint8)


def save_segment_pictures(
    result: SegmentProbeResult, scores: ProbeScores, folder: str | os.PathLike
) -> list[Path]:
    """The confusion matrix (pixels, rows true) and image / truth / prediction rows."""
    folder = Path(folder)
    summary = {"confusion": result.confusion, "classes": result.classes,
               "top1": 100 * result.pixel_accuracy, "num_val": result.num_val,
               "protocol": f"segment {result.protocol}, pixel"}  # fmt: skip
    written = [save_figure(plot_confusion_matrix(summary), folder / CONFUSION_PICTURE)]
    if scores.examples:
        fig = new_figure(6, 2 * len(scores.examples))
        axes = fig.subplots(len(scores.examples), 3, squeeze=False)
        for row, (pixels, pred, truth) in zip(axes, scores.examples, strict=True):
            for ax, picture, title in zip(
                row, (pixels, mask_overlay(pixels, truth), mask_overlay(pixels, pred)),
                ("image", "truth", "prediction"), strict=True,
            ):  # fmt: skip
                ax.imshow(picture)
                ax.set_title(title, fontsize=8)
                blank_axes(ax)
        written.append(save_figure(fig, folder / EXAMPLES_PICTURE))
    return written


def _save_picture(picture: Image.Image, path: Path) -> Path:
    """A PNG written atomically."""
    return atomic_write(path, lambda f: picture.save(f, format="png"))


def write_predictions(
    probe: SegmentProbe,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    scales: Sequence[float] = (1.0,),
) -> list[Path]:
    """For every image: ``out/NAME.png`` (its index mask, VOC palette) and
    ``out/NAME_overlay.png``."""
    paths = list_images(list(images))
    out = Path(out)
    written = []
    for path, name in zip(paths, unique_names(paths), strict=True):
        pixels = np.asarray(load_image(Path(path)))
        (pred,) = probe.predict([pixels], scales)
        written.append(write_index_mask(out / f"{name}.png", pred))
        overlay = Image.fromarray(mask_overlay(pixels, pred))
        written.append(_save_picture(overlay, out / f"{name}_overlay.png"))
    return written


def segment_and_draw(
    model: str | os.PathLike,
    train: str | os.PathLike,
    val: str | os.PathLike,
    out_json: str | os.PathLike,
    predict: Sequence[str | os.PathLike] = (),
    predict_out: str | os.PathLike | None = None,
    **options,
) -> tuple[SegmentProbeResult, list[Path]]:
    """`dinolab segment`: probe, write ``out_json`` with the pictures beside it, and (with
    ``predict``) masks for new images into ``predict_out``."""
    if predict and predict_out is None:
        raise ValueError("--predict IMAGES needs --out DIR for the masks")
    result, probe, scores = run_segment(model, train, val, out_json=out_json, **options)
    written = [Path(out_json), *save_segment_pictures(result, scores, Path(out_json).parent)]
    if predict:
        assert predict_out is not None
        written += write_predictions(probe, predict, predict_out, result.scales)
    return result, written


DISCOVERY_FILE = "discovery.jsonl"


def _boxes_overlay(pixels: np.ndarray, mask: np.ndarray, boxes: list[list[int]]) -> Image.Image:
    picture = Image.fromarray(mask_overlay(pixels, mask.astype(np.uint8)))
    draw = ImageDraw.Draw(picture)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 0) if i == 0 else (0, 255, 255))
    return picture


def run_discover(
    model: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    method: str = "lost",
    n_objects: int = 1,
    short_side: int | None = None,
    device: str = "auto",
) -> list[Path]:
    """`dinolab discover`: ``out/discovery.jsonl`` (one line per image: its path, ``boxes`` in
    pixels [x0, y0, x1, y1] best first, ``scores``), ``out/NAME_mask.png`` (0/1 index mask of
    the objects' union) and ``out/NAME_overlay.png`` (mask and boxes over the image)."""
    net = load_model(model).to(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(list(images))
    lines, written = [], []
    for path, name in zip(paths, unique_names(paths), strict=True):
        image = load_image(Path(path))
        found = discover_image(net, image, method, n_objects, short_side)
        lines.append(json.dumps({"image": str(path), "method": method, "boxes": found.boxes,
                                 "scores": found.scores}))  # fmt: skip
        written.append(write_index_mask(out / f"{name}_mask.png", found.mask.astype(np.uint8)))
        overlay = _boxes_overlay(np.asarray(image), found.mask, found.boxes)
        written.append(_save_picture(overlay, out / f"{name}_overlay.png"))
    written.append(atomic_write_text(out / DISCOVERY_FILE, "".join(x + "\n" for x in lines)))
    return written


PROPAGATION_FILE = "propagate.json"


def run_propagate(
    model: str | os.PathLike,
    sequences: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    short_side: int | None = None,
    device: str = "auto",
    **protocol,
) -> tuple[PropagationResult, list[Path]]:
    """`dinolab propagate`: each sequence's masks into ``out/SEQ/NAME.png``, a strip of its
    frames with the propagated masks (``out/SEQ.png``), and J&F in ``out/propagate.json``.
    ``protocol``: `propagate_folders`'s n_last_frames, topk, temperature, neighbourhood."""
    net = load_model(model).to(resolve_device(device))
    patch = as_backbone(net).patch_size
    side = short_side or model_short_side(net)
    result, predictions = propagate_folders(model_patch_features(net), patch, sequences, side,
                                            **protocol)  # fmt: skip
    out = Path(out)
    written = [result.save_json(out / PROPAGATION_FILE)]
    for folder in sequence_folders(sequences):
        pairs = list_mask_pairs(folder)
        preds = predictions[folder.name]
        for pair, pred in zip(pairs, preds, strict=True):
            written.append(write_index_mask(out / folder.name / f"{pair.name}.png", pred))
        shown = np.linspace(0, len(pairs) - 1, min(len(pairs), 6)).round().astype(int)
        fig = new_figure(2 * len(shown), 2.2)
        axes = fig.subplots(1, len(shown), squeeze=False)[0]
        for ax, i in zip(axes, shown, strict=True):
            pixels = np.asarray(load_image(pairs[i].image))
            ax.imshow(mask_overlay(pixels, preds[i]))
            ax.set_title("given" if i == 0 else f"frame {i}", fontsize=8)
            blank_axes(ax)
        written.append(save_figure(fig, out / f"{folder.name}.png"))
    return result, written

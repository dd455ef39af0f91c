"""Multi-object scenes, videos and the images/ + masks/ layout they are written in."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dinolab.data.mask_pairs import (
    list_mask_pairs,
    read_class_names,
    read_index_mask,
    read_pair,
    voc_palette,
    write_index_mask,
)
from dinolab.data.scenes import SyntheticScenes, make_scenes_dataset, make_video_dataset, read_boxes


def test_scene_mask_boxes_and_classes_agree() -> None:
    data = SyntheticScenes(6, 64, seed=3, min_objects=2, max_objects=3)
    for i in range(len(data)):
        s = data.scene(i)
        assert s.mask.shape == (64, 64) and s.image.size == (64, 64)
        assert set(np.unique(s.mask)) <= set(range(data.num_classes))
        assert set(np.unique(s.mask)) - {0} == {label + 1 for label in s.labels}
        assert np.array_equal(s.instances > 0, s.mask > 0)
        for (x0, y0, x1, y1), label in zip(s.boxes, s.labels, strict=True):
            inside = s.mask[y0:y1, x0:x1]
            assert (inside == label + 1).any()  # the box holds its shape's pixels
    again = data.scene(2)
    assert np.array_equal(np.asarray(again.image), np.asarray(data.scene(2).image))


def test_video_shapes_move_on_a_fixed_background() -> None:
    frames = SyntheticScenes(1, 64, seed=0, min_objects=1, max_objects=1).video(0, frames=4)
    centres = [np.argwhere(f.mask > 0).mean(axis=0) for f in frames]
    steps = [np.linalg.norm(b - a) for a, b in zip(centres, centres[1:], strict=False)]
    assert all(1.0 < s < 5.0 for s in steps)  # 0.04 x 64 = 2.6 px per frame
    far = [np.asarray(f.image, np.float32)[f.mask == 0] for f in frames[:2]]
    assert abs(far[0].mean() - far[1].mean()) < 3  # same background, fresh noise


def test_written_layout_reads_back(tmp_path) -> None:
    data = SyntheticScenes(3, 48, seed=1)
    make_scenes_dataset(tmp_path / "s", data)
    pairs = list_mask_pairs(tmp_path / "s")
    assert [p.name for p in pairs] == ["00000", "00001", "00002"]
    image, mask = read_pair(pairs[1])
    assert np.array_equal(mask, data.scene(1).mask) and image.size == (48, 48)
    assert Image.open(pairs[1].mask).mode == "P"  # VOC palette picture
    assert read_boxes(tmp_path / "s")["00001"] == data.scene(1).boxes
    assert read_class_names(tmp_path / "s", 7)[:2] == ["background", "circle"]
    videos = make_video_dataset(tmp_path / "v", SyntheticScenes(2, 48, seed=1), frames=3)
    assert len(list_mask_pairs(videos[1])) == 3
    _, first = read_pair(list_mask_pairs(videos[1])[0])
    assert np.array_equal(first, SyntheticScenes(2, 48, seed=1).video(1, 3)[0].instances)


def test_voc_palette_known_colours() -> None:
    palette = voc_palette()
    assert palette[0:3] == [0, 0, 0]
    assert palette[3:6] == [128, 0, 0]  # 1: aeroplane, dark red
    assert palette[15 * 3 : 15 * 3 + 3] == [192, 128, 128]  # 15: person
    assert palette[255 * 3 : 255 * 3 + 3] == [224, 224, 192]  # the ignore colour


def test_bad_pairs_are_named(tmp_path) -> None:
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root / "images" / "a.png")
    Image.new("RGB", (16, 16)).save(root / "images" / "b.jpg")
    write_index_mask(root / "masks" / "a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"b\.jpg has no mask"):
        list_mask_pairs(root)
    write_index_mask(root / "masks" / "b.png", np.zeros((8, 16), np.uint8))
    write_index_mask(root / "masks" / "c.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"mask .*c\.png has no image"):
        list_mask_pairs(root)
    (root / "masks" / "c.png").unlink()
    pairs = list_mask_pairs(root)
    with pytest.raises(ValueError, match=r"b\.png is 16x8 but its image .*b\.jpg is 16x16"):
        read_pair(pairs[1])
    Image.new("RGB", (16, 16)).save(root / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is a RGB picture, not an index mask"):
        read_index_mask(root / "masks" / "a.png")
    with pytest.raises(FileNotFoundError, match="DIR/images"):
        list_mask_pairs(tmp_path / "nothing")


def test_boxes_file_lines(tmp_path) -> None:
    make_scenes_dataset(tmp_path, SyntheticScenes(2, 32, seed=0))
    lines = (tmp_path / "boxes.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["00000", "00001"]

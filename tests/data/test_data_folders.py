"""ImageDataset on real files: Imagenette, file lists, and bad or unusual files it must survive."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import (
    EvalTransform,
    ImageDataset,
    MultiCropTransform,
    UnreadableImageError,
    collate_multicrop,
    load_image,
)
from dinolab.runfiles import RunDir


def _jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Unlabeled folder: 4 good but unusual images and 3 files that cannot be decoded."""
    root = tmp_path / "odd"
    root.mkdir()
    good = _jpeg_bytes()
    (root / "a_good.jpg").write_bytes(good)
    (root / "b_corrupt.jpg").write_bytes(good[:20] + bytes(200) + good[220:])  # tables zeroed
    (root / "c_truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "d_text.jpg").write_text("this is not an image\n")
    Image.new("CMYK", (32, 32), (255, 0, 0, 0)).save(root / "e_cmyk.jpg")  # pure cyan
    gray16 = np.full((16, 16), 40000, dtype=np.uint16)
    Image.fromarray(gray16).save(root / "f_gray16.png")
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)  # one opaque blue pixel; index 0 is transparent
    pal.save(root / "g_palette.png", transparency=0)
    Image.new("RGB", (10, 10), (10, 200, 30)).save(root / "h_tiny.PNG")  # upper-case extension
    (root / "notes.txt").write_text("not counted: wrong extension")
    return root


BAD = ("b_corrupt.jpg", "c_truncated.jpg", "d_text.jpg")


def test_imagenette_class_folders(imagenette: Path) -> None:
    ds = ImageDataset(imagenette / "val")
    classes = sorted(p.name for p in (imagenette / "val").iterdir() if p.is_dir())
    assert ds.classes == classes and len(classes) == 10
    assert len(ds) == sum(1 for _ in (imagenette / "val").rglob("*.jpg"))
    for i in (0, len(ds) // 2, len(ds) - 1):
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == (160, 160)
        assert label == ds.labels[i] and ds.paths[i].parent.name == classes[label]


def test_unusual_images_decode_to_sensible_rgb(odd_folder: Path) -> None:
    cyan = np.asarray(load_image(odd_folder / "e_cmyk.jpg"))
    assert np.abs(cyan[16, 16].astype(int) - [0, 255, 255]).max() <= 3
    gray = np.asarray(load_image(odd_folder / "f_gray16.png"))
    assert (gray == round(40000 / 257)).all()  # 156, scaled; clipping would give 255
    pal = np.asarray(load_image(odd_folder / "g_palette.png"))
    assert pal[0, 0].tolist() == [0, 0, 255]  # opaque pixel keeps its colour
    assert pal[4, 4].tolist() == [255, 255, 255]  # transparent pixel -> background
    black_bg = load_image(odd_folder / "g_palette.png", background=(0, 0, 0))
    assert np.asarray(black_bg)[4, 4].tolist() == [0, 0, 0]
    rotated = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones write it
    rotated.save(odd_folder / "r.jpg", exif=exif.tobytes())
    assert load_image(odd_folder / "r.jpg").size == (20, 40)


def test_bad_files_are_skipped_counted_and_logged(odd_folder: Path, tmp_path: Path) -> None:
    ds = ImageDataset(odd_folder, transform=MultiCropTransform(n_local=2))
    assert ds.classes == [] and len(ds) == 8 and set(ds.labels) == {-1}
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        items = [ds[i] for i in range(len(ds))]
    for crops, label in items:  # fixed shapes even for bad files and the 10x10 image
        assert [tuple(c.shape) for c in crops] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 2
        assert label == -1
    assert sorted(Path(p).name for p in ds.skipped) == sorted(BAD)
    # the substitute of a bad file is the next readable one (e_cmyk follows the bad run)
    plain = ImageDataset(odd_folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(np.asarray(plain[1][0]), np.asarray(plain[4][0]))
    logged = ImageDataset(odd_folder, skip_log=tmp_path / "skips.txt")
    with pytest.warns(RuntimeWarning):
        logged[3]
    assert (tmp_path / "skips.txt").read_text().startswith(str(odd_folder / "d_text.jpg"))
    out = ds.write_skipped(tmp_path / "run")
    lines = out.read_text().splitlines()
    assert out.name == RunDir.SKIPPED and len(lines) == 3
    assert all("\t" in line and line.split("\t")[1] for line in lines)  # path and reason


def test_skips_in_worker_processes_reach_the_main_process(odd_folder: Path) -> None:
    ds = ImageDataset(odd_folder, transform=EvalTransform(32))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(len(b[0]) for b in batches) == 8
    assert sorted(Path(p).name for p in ds.skipped) == sorted(BAD)


def test_on_error_raise_names_file_and_fix(odd_folder: Path) -> None:
    ds = ImageDataset(odd_folder, on_error="raise")
    ds[0]
    with pytest.raises(UnreadableImageError, match=r"b_corrupt\.jpg.*on_error=\"skip\""):
        ds[1]


def test_clear_errors_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        ImageDataset(tmp_path / "empty")
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "readme.txt").write_text("x")
    (docs / "photo.gif").write_bytes(b"GIF89a")
    with pytest.raises(FileNotFoundError, match=r"no images found.*\.jpg.*\.webp.*extensions="):
        ImageDataset(docs)
    with pytest.raises(ValueError, match="on_error"):
        ImageDataset(docs, on_error="ignore")


def test_nested_unlabeled_and_forced_labels(tmp_path: Path) -> None:
    for sub in ("2019/a", "2020"):
        (tmp_path / "p" / sub).mkdir(parents=True)
        (tmp_path / "p" / sub / "x.jpg").write_bytes(_jpeg_bytes(16))
    auto = ImageDataset(tmp_path / "p")  # only folders at the top -> class folders
    assert auto.classes == ["2019", "2020"] and auto.labels == [0, 1]
    flat = ImageDataset(tmp_path / "p", layout="flat")
    assert len(flat) == 2 and flat.labels == [-1, -1] and flat.classes == []
    (tmp_path / "p" / "top.jpeg").write_bytes(_jpeg_bytes(16))
    assert ImageDataset(tmp_path / "p").labels == [-1, -1, -1]  # images at top -> unlabeled
    (tmp_path / "p" / "top.jpeg").unlink()
    (tmp_path / "p" / "2019b").mkdir()  # an empty class keeps its index (splits stay aligned)
    with pytest.warns(RuntimeWarning, match="without images.*2019b"):
        ds = ImageDataset(tmp_path / "p")
    assert ds.classes == ["2019", "2019b", "2020"] and ds.labels == [0, 2]


def test_file_lists_txt_and_csv(imagenette: Path, tmp_path: Path) -> None:
    val = ImageDataset(imagenette / "val")
    picks = [0, 1, len(val) - 1]
    lst = tmp_path / "lists"
    lst.mkdir()
    (lst / "local.jpg").write_bytes(_jpeg_bytes(16))
    names = [val.classes[val.labels[i]] for i in picks]
    rows = [f"{val.paths[i]},{n}" for i, n in zip(picks, names, strict=True)]
    (lst / "named.csv").write_text("path,label\n" + "\n".join(rows) + "\nlocal.jpg,zebra\n")
    ds = ImageDataset(lst / "named.csv")
    assert ds.classes == sorted({*names, "zebra"}) and len(ds) == 4
    assert ds.paths[-1] == lst / "local.jpg"  # relative to the list's folder
    assert ds.classes[ds.labels[-1]] == "zebra" and ds[3][0].size == (16, 16)
    (lst / "plain.txt").write_text(f"# comment\n{val.paths[0]}\n\nlocal.jpg\n")
    plain = ImageDataset(lst / "plain.txt")
    assert len(plain) == 2 and plain.labels == [-1, -1]
    (lst / "ints.txt").write_text(f"{val.paths[0]}\t3\nlocal.jpg 1\n")
    assert ImageDataset(lst / "ints.txt").labels == [3, 1]
    (lst / "missing.txt").write_text("gone.jpg\nlocal.jpg\n")
    with pytest.raises(FileNotFoundError, match="do not exist.*on_error"):
        ImageDataset(lst / "missing.txt", on_error="raise")


def _subset_list(imagenette: Path, tmp_path: Path, n: int = 6) -> Path:
    files = sorted((imagenette / "train").rglob("*.jpg"))[::1000][:n]
    out = tmp_path / "subset.txt"
    out.write_text("\n".join(str(f) for f in files))
    return out


def test_augmentation_is_identical_with_0_and_2_workers(imagenette: Path, tmp_path: Path) -> None:
    ds = ImageDataset(_subset_list(imagenette, tmp_path), MultiCropTransform(n_local=2), seed=7)

    def crops(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=2, num_workers=workers, collate_fn=collate_multicrop
        )
        return [
            torch.cat([b["global_crops"].flatten(), b["local_crops"].flatten()]) for b in loader
        ]

    a, b = crops(0), crops(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    assert not torch.equal(crops(0)[0], a[0])  # a new epoch draws new crops
    ds.set_epoch(0)
    assert torch.equal(crops(0)[0], a[0])
    # persistent workers live across epochs and still see set_epoch
    loader = torch.utils.data.DataLoader(
        ds, batch_size=6, num_workers=1, persistent_workers=True, collate_fn=collate_multicrop
    )
    first = next(iter(loader))["global_crops"]
    ds.set_epoch(1)
    second = next(iter(loader))["global_crops"]
    assert torch.equal(first[0], a[0][: first[0].numel()].view_as(first[0]))
    assert torch.equal(second[0].flatten(), crops(0)[0][: second[0].numel()])


def test_draft_decoding_is_used_only_when_quality_allows(imagenette: Path, tmp_path: Path) -> None:
    t = MultiCropTransform()
    # 160 px Imagenette: the 0.05-scale 96 px local crop needs every pixel -> no draft
    path = sorted((imagenette / "val").rglob("*.jpg"))[0]
    assert load_image(path, t.min_decode_size).size == (160, 160)
    # a large smooth JPEG: decoded at half size, and the smallest possible crop still has
    # at least the output size, so no view is upsampled more than at full resolution
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    smooth = np.stack([xx, yy, (xx + yy) / 2], -1) * 255
    big = tmp_path / "big.jpg"
    Image.fromarray(smooth.astype(np.uint8)).save(big, quality=95)
    small = load_image(big, t.min_decode_size)
    assert small.size == (512, 512)
    w, h = small.size
    for view in t.views:
        assert (view.scale[0] * w * h * 3 / 4) ** 0.5 >= view.size
    # quality: the evaluation view from the draft decode matches the full decode
    ev = EvalTransform(224)
    full = ev(load_image(big))
    fast = ev(load_image(big, ev.min_decode_size))
    assert load_image(big, ev.min_decode_size).size == (256, 256)
    assert (full - fast).abs().mean() < 0.02  # normalised units: ~1 grey level
    # through the dataset: draft changes nothing on 160 px images, and speeds up big ones
    t2 = MultiCropTransform(n_local=2)
    on, off = (ImageDataset(path.parent, t2, draft=d) for d in (True, False))
    assert all(torch.equal(x, y) for x, y in zip(on[0][0], off[0][0], strict=True))
    big_on, big_off = (ImageDataset(tmp_path, ev, draft=d, layout="flat") for d in (True, False))
    assert (big_on[0][0] - big_off[0][0]).abs().mean() < 0.02


def test_real_csv_with_header_picks_path_and_label_columns(imagenette: Path) -> None:
    ds = ImageDataset(imagenette / "labels.csv")  # path,split,label,wnid,... relative paths
    folders = ImageDataset(imagenette / "val")
    assert len(ds) == 9469 + len(folders)
    i = ds.paths.index(folders.paths[5])
    assert ds.labels[i] == folders.labels[5]


def test_all_listed_extensions_any_case_and_plain_transforms(tmp_path: Path) -> None:
    img = Image.new("RGB", (12, 8), (1, 2, 3))
    for name, fmt in (("a.BMP", "BMP"), ("b.webp", "WEBP"), ("c.Tif", "TIFF"), ("d.TIFF", "TIFF")):
        img.save(tmp_path / name, fmt)
    img.save(tmp_path / "e.gif", "GIF")  # not an accepted extension
    ds = ImageDataset(tmp_path, transform=lambda im: im.size)  # no generator parameter
    assert [p.name for p in ds.paths] == ["a.BMP", "b.webp", "c.Tif", "d.TIFF"]
    assert all(ds[i] == ((12, 8), -1) for i in range(len(ds)))
    assert len(ImageDataset(tmp_path, extensions=(".gif",))) == 1


def test_skip_log_lists_each_file_once_over_epochs(odd_folder: Path, tmp_path: Path) -> None:
    """DataLoader workers start afresh every epoch (as the Trainer's do): the log still lists
    each unreadable file once, and the warnings name that kept file."""
    log = tmp_path / "skipped.txt"
    ds = ImageDataset(odd_folder, transform=EvalTransform(32), skip_log=log)
    with pytest.warns(RuntimeWarning, match=f"Skipped files are listed in {log}"):
        ds[1]
    for epoch in range(2):
        ds.set_epoch(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
    lines = log.read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == sorted(BAD)

"""Turn a config into what the Trainer needs: the dataset with its collate, the Method, and
the evaluator scoring it while it trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dinolab.checkpoint import read_training_checkpoint
from dinolab.data import (
    ClassifierTrainTransform,
    ImageDataset,
    MultiCropCollate,
    MultiCropTransform,
    TensorMultiCrop,
    TensorMultiCropCollate,
    collate_single_view,
)
from dinolab.data.decode_cache import estimated_bytes
from dinolab.eval.classification import ClassifierValidation, check_labelled_pair
from dinolab.eval.features import FeatureOptions
from dinolab.eval.online_knn import OnlineKNN
from dinolab.hub import load
from dinolab.methods import (
    DINOv2Network,
    Method,
    MethodInputs,
    MultiCropNetwork,
    Views,
    build_head,
    method_spec,
)
from dinolab.models.backbone import as_backbone
from dinolab.runfiles import RunDir
from dinolab.train.checkpoint import load_method_state
from dinolab.train.config import build_config
from dinolab.train.pretrained import start_from_pretrained
from dinolab.train.schedules import run_epochs

# data.pipeline=auto: the tensor path up to this global crop size (CPU per image against the PIL
# path, 8 local crops, benchmarks/README.md: 2.1x less at 64 px, 1.9x at 96, 1.4x at 128, 1.2x at
# 160, 0.7x at 224) and while its decode cache stays below AUTO_CACHE_BYTES on disk.
TENSOR_PIPELINE_MAX_CROP = 128
AUTO_CACHE_BYTES = 8 * 2**30


def data_pipeline(cfg: DictConfig, n_images: int, files: bool = True) -> str:
    """`data.pipeline` resolved for `n_images` images: "auto" is "tensor" when every global crop
    (the high-resolution phase's too) is at most TENSOR_PIPELINE_MAX_CROP px and the decode
    cache would take at most AUTO_CACHE_BYTES, else "pil"; always "pil" for images that are not
    `files` (shards: the decode cache reads files)."""
    if cfg.data.pipeline != "auto":
        return cfg.data.pipeline
    if not files:
        return "pil"
    small = max([cfg.crops.global_size, *_highres_sizes(cfg)]) <= TENSOR_PIPELINE_MAX_CROP
    fits = estimated_bytes(n_images, cache_short_side(cfg)) <= AUTO_CACHE_BYTES
    return "tensor" if small and fits else "pil"


def cache_short_side(cfg: DictConfig) -> int:
    """`data.cache_short_side`, or the smallest at which no crop of any phase is upsampled."""
    if cfg.data.cache_short_side is not None:
        return int(cfg.data.cache_short_side)
    sizes = [cfg.crops.global_size, *_highres_sizes(cfg)]
    return max(_multicrop(cfg, size, tensor=False).needed_short_side() for size in sizes)


def _highres_sizes(cfg: DictConfig) -> list[int]:
    return [cfg.crops.highres_global_size] if cfg.crops.highres_fraction > 0 else []


def build_data(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any]:
    """The dataset of `data.path` and its collate function, with the views the method's
    registry entry names (`Views`): multi-crop views (DINO, DINOv2) or one view per image (a
    random-resized crop of crops.global_scale and a flip); labelled ones must have the classes
    of `finetune.val`.

    Unreadable images are skipped (or raise, with data.on_error=raise); the paths skipped are
    appended to RUN_DIR/skipped_images.txt, from every DataLoader worker. Nothing is written
    here: the run directory is created by the Trainer when training starts. The tensor pipeline
    first decodes every image into the decode cache (once; later runs reuse it), at the size
    the largest phase's crops need.
    """
    if not cfg.data.path:
        raise ValueError(
            "no training data: pass --data DIR (a folder of images, a file list, or shards "
            "'DIR/shard-{000000..000099}.tar')"
        )
    dataset = ImageDataset(
        cfg.data.path,
        on_error=cfg.data.on_error,
        seed=cfg.seed,
        skip_log=RunDir(run_dir).skipped,
    )
    views = method_spec(cfg.method).views
    multi_crop = views is Views.MULTI_CROP
    files = dataset.shards is None
    tensor = multi_crop and data_pipeline(cfg, len(dataset), files) == "tensor"
    transform = _transform(cfg, cfg.crops.global_size, tensor)
    dataset.transform = transform
    if tensor:
        dataset.decode_once(cache_short_side(cfg), cfg.data.cache_dir)
    if views is Views.LABELLED:
        if cfg.finetune.val is None:
            raise ValueError(
                f"method={cfg.method} needs labelled validation images (finetune.val): run it "
                "with `dinolab finetune MODEL --train DIR --val DIR`"
            )
        check_labelled_pair(dataset, ImageDataset(cfg.finetune.val))
    start = _highres_start(cfg, len(dataset))
    if tensor:
        collate: Any = TensorMultiCropCollate(transform)
    elif multi_crop:
        collate = MultiCropCollate(n_global=2)
    else:
        collate = collate_single_view
    if start is None:
        return dataset, collate
    highres = _transform(cfg, cfg.crops.highres_global_size, tensor)
    return HighResPhase(dataset, highres, start), collate


def _transform(cfg: DictConfig, size: int, tensor: bool) -> Any:
    if method_spec(cfg.method).views is not Views.MULTI_CROP:
        return ClassifierTrainTransform(size, scale=tuple(cfg.crops.global_scale))
    return _multicrop(cfg, size, tensor)


def _multicrop(cfg: DictConfig, global_size: int, tensor: bool) -> MultiCropTransform:
    c = cfg.crops
    return (TensorMultiCrop if tensor else MultiCropTransform)(
        global_size=global_size,
        local_size=c.local_size,
        n_local=c.n_local,
        global_scale=tuple(c.global_scale),
        local_scale=tuple(c.local_scale),
        jitter=tuple(c.jitter),
        jitter_p=c.jitter_p,
        gray_p=c.gray_p,
        blur_sigma=tuple(c.blur_sigma),
        blur_reference=tuple(c.blur_reference) if c.blur_reference is not None else None,
    )


def _highres_start(cfg: DictConfig, n_images: int) -> int | None:
    epochs = run_epochs(cfg.optim, max(1, n_images // cfg.optim.batch_size))
    return highres_start_epoch(epochs, cfg.crops.highres_fraction)


def time_highres_phase(dataset: Any, cfg: DictConfig) -> None:
    """Start `build_data`'s high-resolution phase, if it has one, at the epoch the run's length
    in `cfg` gives (after `--budget` has set it)."""
    start = _highres_start(cfg, len(dataset))
    if isinstance(dataset, HighResPhase) and start is not None:
        dataset.start_epoch = start


def highres_start_epoch(epochs: int, fraction: float) -> int | None:
    """First epoch of the high-resolution phase: the last ceil(fraction * epochs) epochs
    (at least one when fraction > 0); None when the phase is off."""
    if fraction <= 0:
        return None
    return epochs - max(1, math.ceil(fraction * epochs - 1e-9))


class HighResPhase:
    """The dataset with its multi-crop transform swapped for larger global crops from
    `start_epoch` on (DINOv2's high-resolution adaptation).

    The phase is a function of the epoch the Trainer sets (from the step, so a resumed run
    lands in the right phase). Each item picks its transform from the dataset's epoch, which
    lives in shared memory, so DataLoader workers that outlive an epoch switch too. The ViT
    interpolates its position embeddings to the larger grid.
    """

    def __init__(self, dataset: ImageDataset, highres_transform: Any, start_epoch: int) -> None:
        self.dataset = dataset
        self.transforms = (dataset.transform, highres_transform)
        self.start_epoch = start_epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        self.dataset.transform = self.transforms[int(self.dataset.epoch >= self.start_epoch)]
        return self.dataset[index]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes


def build_method(cfg: DictConfig, num_classes: int = 0, from_pretrained: bool = True) -> Method:
    """The Method registered as `cfg.method`, started from `model.pretrained` when it is set
    (and `from_pretrained`: a resumed run takes every weight from its checkpoint); a classifier
    (method=supervised) needs the number of classes of its training data."""
    inputs = MethodInputs(num_classes, frozen_teacher=lambda: distillation_teacher(cfg))
    method = method_spec(cfg.method).build(cfg, inputs)
    if cfg.model.pretrained and from_pretrained:
        start_from_pretrained(method, cfg)
    return method


def build_evaluator(cfg: DictConfig) -> OnlineKNN | ClassifierValidation | None:
    """What scores the run while it trains: a classifier's accuracy on `finetune.val`, else the
    weighted k-NN of the trained backbone when the `eval` section asks for it (eval.knn_val)."""
    crop_size = cfg.eval.crop_size or cfg.crops.global_size
    if method_spec(cfg.method).views is Views.LABELLED:
        return ClassifierValidation(cfg.finetune.val, crop_size, num_workers=cfg.data.num_workers)
    e = cfg.eval
    if e.knn_val is None:
        return None
    return OnlineKNN(e.knn_train or cfg.data.path, e.knn_val, FeatureOptions(crop_size=crop_size))


def distillation_teacher(cfg: DictConfig) -> DINOv2Network:
    """The frozen teacher of method=distill: the teacher network of a run's checkpoint.pt (its
    trained heads), or a backbone `dinolab.load` reads with fresh heads (``cfg.head``)."""
    source = str(cfg.teacher.model)
    checkpoint = read_training_checkpoint(source)
    if checkpoint is None:
        backbone = load(source)
        dim = as_backbone(backbone).embed_dim
        d = cfg.dinov2
        separate = d.ibot_loss_weight > 0 and d.ibot_separate_head
        ibot_dim = d.ibot_out_dim or cfg.head.out_dim
        ibot_head = build_head(cfg, dim, ibot_dim, d.ibot_bottleneck_dim) if separate else None
        return DINOv2Network(backbone, build_head(cfg, dim), ibot_head)
    saved = build_config(base=checkpoint.config)  # an older run's config gets new defaults
    if saved.method == "distill":
        raise ValueError(
            f"teacher.model={source} is a distillation run; pass its {RunDir.BACKBONE} (the "
            "distilled student) instead"
        )
    trained = build_method(saved, from_pretrained=False)  # its weights are the checkpoint's
    load_method_state(trained, checkpoint.method)
    teacher = trained.get_submodule("teacher")
    if isinstance(teacher, MultiCropNetwork):  # DINO: one head for [CLS] and (shared) patches
        return DINOv2Network(teacher.backbone, teacher.head)
    assert isinstance(teacher, DINOv2Network)  # the only other method with a teacher
    return teacher

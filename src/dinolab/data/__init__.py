"""dinolab.data: image folders, multi-crop augmentation, iBOT masks, collate, demo data.

Pillow + torch only (no torchvision). Randomness always comes from an explicit
``torch.Generator`` so a sample depends on (seed, epoch, index), never on worker count.
"""

from dinolab.data.collate import (
    MultiCropCollate,
    collate_multicrop,
    collate_single_view,
    draw_batch_masks,
)
from dinolab.data.decode import UnreadableImageError, load_image, to_rgb
from dinolab.data.decode_cache import DecodeCache
from dinolab.data.folders import IMAGE_EXTENSIONS, ImageDataset
from dinolab.data.masking import MaskGenerator
from dinolab.data.multicrop import MultiCropTransform
from dinolab.data.synthetic import (
    SHAPE_CLASSES,
    SyntheticShapes,
    load_mask,
    make_shapes_dataset,
    mask_path_for,
)
from dinolab.data.tensor_multicrop import TensorMultiCrop, TensorMultiCropCollate
from dinolab.data.transforms import ClassifierTrainTransform, EvalTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "ClassifierTrainTransform",
    "DecodeCache",
    "EvalTransform",
    "ImageDataset",
    "MaskGenerator",
    "MultiCropCollate",
    "MultiCropTransform",
    "SyntheticShapes",
    "TensorMultiCrop",
    "TensorMultiCropCollate",
    "UnreadableImageError",
    "collate_multicrop",
    "collate_single_view",
    "draw_batch_masks",
    "load_image",
    "load_mask",
    "make_shapes_dataset",
    "mask_path_for",
    "to_rgb",
]

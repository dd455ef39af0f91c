"""Seeing inside a ViT: attention maps, patch-feature PCA, ViT-paper analyses, embedding maps
and the HTML run report. Figures use matplotlib's object API (no pyplot state, no display)."""

from dinolab.viz.analysis import (
    attention_distances,
    mean_attention_distance,
    patch_embedding_components,
    position_embedding_similarity,
    run_analysis,
)
from dinolab.viz.attention import (
    AttentionMaps,
    attention_maps,
    mass_mask,
    plot_attention,
    run_attention,
    save_attention,
)
from dinolab.viz.embedding_map import EmbeddingMap, compute_map, map_html, project_2d, run_map
from dinolab.viz.images import PreparedImage, prepare_image, upsample
from dinolab.viz.pca import PatchPCA, foreground_sign, patch_pca, plot_pca, run_pca
from dinolab.viz.report import write_report

__all__ = [
    "AttentionMaps",
    "EmbeddingMap",
    "PatchPCA",
    "PreparedImage",
    "attention_distances",
    "attention_maps",
    "compute_map",
    "foreground_sign",
    "map_html",
    "mass_mask",
    "mean_attention_distance",
    "patch_embedding_components",
    "patch_pca",
    "plot_attention",
    "plot_pca",
    "position_embedding_similarity",
    "prepare_image",
    "project_2d",
    "run_analysis",
    "run_attention",
    "run_map",
    "run_pca",
    "save_attention",
    "upsample",
    "write_report",
]

"""dinolab: self-supervised Vision Transformers of the DINO family.

Train (DINO, DINOv2), evaluate (k-NN, linear probe), look inside (attention, PCA),
extract embeddings, curate image pools, and load or export the official checkpoints.
"""

__version__ = "0.1.0"

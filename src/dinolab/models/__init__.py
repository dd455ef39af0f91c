"""dinolab.models."""

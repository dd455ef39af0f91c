"""dinolab.data."""

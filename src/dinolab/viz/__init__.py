"""dinolab.viz."""

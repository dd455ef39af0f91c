"""dinolab.methods."""

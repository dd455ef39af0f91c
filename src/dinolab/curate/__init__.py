"""dinolab.curate."""

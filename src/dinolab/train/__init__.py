"""dinolab.train."""

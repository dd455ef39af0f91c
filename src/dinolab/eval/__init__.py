"""dinolab.eval."""

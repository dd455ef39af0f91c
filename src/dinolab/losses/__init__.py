"""dinolab.losses."""

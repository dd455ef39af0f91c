"""Constants shared by the curation tests (a module of its own: `conftest` names are ambiguous)."""

CROP = 32  # 2x2 patches of 16 px: embedding a dozen images takes a fraction of a second

"""`python -m dinolab ...` (what `torchrun -m dinolab train ...` runs)."""

from dinolab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m rnnlab ...` (and `torchrun -m rnnlab ...`) run the command-line interface."""

from rnnlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

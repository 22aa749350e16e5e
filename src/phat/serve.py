"""`python -m phat.serve`: the same as `phat serve` (phat.cli.serve)."""

from phat.cli.serve import main

if __name__ == "__main__":
    main()

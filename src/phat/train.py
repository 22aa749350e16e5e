"""`python -m phat.train`: the same as `phat train` (phat.cli.train)."""

from phat.cli.train import main

if __name__ == "__main__":
    main()

"""`python -m phat.promote`: the same as `phat promote` (phat.cli.promote)."""

from phat.cli.promote import main

if __name__ == "__main__":
    main()

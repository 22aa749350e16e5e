"""`python -m phat.walkforward`: the same as `phat walkforward` (phat.cli.walkforward)."""

from phat.cli.walkforward import main

if __name__ == "__main__":
    main()

"""`python -m phat.rollback`: the same as `phat rollback` (phat.cli.rollback)."""

from phat.cli.rollback import main

if __name__ == "__main__":
    main()

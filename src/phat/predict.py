"""`python -m phat.predict`: the same as `phat predict` (phat.cli.predict)."""

from phat.cli.predict import main

if __name__ == "__main__":
    main()

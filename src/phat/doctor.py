"""`python -m phat.doctor`: the same as `phat doctor` (phat.cli.doctor)."""

from phat.cli.doctor import main

if __name__ == "__main__":
    main()

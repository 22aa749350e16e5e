"""`python -m phat.monitor`: the same as `phat monitor` (phat.cli.monitor)."""

from phat.cli.monitor import main

if __name__ == "__main__":
    main()

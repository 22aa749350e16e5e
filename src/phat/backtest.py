"""`python -m phat.backtest`: the same as `phat backtest` (phat.cli.backtest)."""

from phat.cli.backtest import main

if __name__ == "__main__":
    main()

"""`phat <verb> [overrides]` and `python -m phat <verb>`: one command for every verb.

`phat` alone (or `phat --help`) lists the verbs; `phat <verb> --help` shows that verb's groups,
keys with their defaults, and examples, without importing torch or MLflow.
"""

from __future__ import annotations

import importlib
import sys


def usage() -> str:
    from phat.cli import VERBS

    lines = ["usage: phat <verb> [key=value ...] [group=option ...]", "", "verbs:"]
    lines += [f"  {name:<12} {text}" for name, (_, _, text) in VERBS.items()]
    lines += [
        "",
        "phat <verb> --help shows the verb's keys, defaults and examples.",
        "python -m phat.<verb> is the same as phat <verb>.",
    ]
    return "\n".join(lines)


def main() -> None:
    from phat.cli import VERBS, fail

    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0)
    verb = args[0]
    if verb not in VERBS:
        fail(f"phat: unknown verb {verb!r}; expected one of {list(VERBS)} (phat --help)")
    sys.argv = [f"phat {verb}", *args[1:]]
    importlib.import_module(VERBS[verb][0]).main()


if __name__ == "__main__":
    main()

"""What the benchmark scripts share: checks of their options, and problems shown as one line.

A script imports it as `from common import …`: run as `python3 benchmarks/NAME.py`, a script's
own folder is the first on its import path.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from digits import DigitsError


def count(text: str) -> int:
    """An option's value that counts something (seeds, repeats, images): a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number, 1 or more, not {text}")
    return value


def positive(text: str) -> float:
    """An option's value that measures something (seconds, a rate): a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"give a positive number, not {text}")
    return value


def run_main(main: Callable[[], None]) -> None:
    """Run a script's main: a problem the user can fix ends it as argparse ends a bad option,
    with one line on standard error and exit status 2, never a traceback."""
    try:
        main()
    except DigitsError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)

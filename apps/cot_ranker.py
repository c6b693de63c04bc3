"""Launcher of the COT ranker (the app lives in ``aftlab.app``): ``python apps/cot_ranker.py [--runs runs]``."""
import sys

from aftlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

"""``python -m aftlab.app``: the COT ranker, with the options of ``aftlab app``."""
import sys

from aftlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

"""Command line of the recurrent speech and text pipelines. See ``python run.py --help``."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())

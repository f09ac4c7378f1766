"""`python -m python_worker` is the `callpanion` command."""

import sys

from python_worker.cli import main

sys.exit(main())

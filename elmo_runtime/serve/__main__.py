"""`python -m elmo_runtime.serve ...` is `elmo-serve ...`."""

import sys

from elmo_runtime.serve.cli import main

sys.exit(main())

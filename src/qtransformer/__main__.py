"""`python -m qtransformer ...`, the `qtransformer` command; what `torchrun -m qtransformer train ...` runs."""

import sys

from .cli import main

sys.exit(main())

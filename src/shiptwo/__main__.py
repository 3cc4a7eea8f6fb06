"""`python -m shiptwo ...`, which torchrun also uses (`torchrun -m shiptwo train ...`)."""

import sys

from shiptwo.cli import main

sys.exit(main())

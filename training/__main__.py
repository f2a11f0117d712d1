"""``python -m icmlm_zoo.training`` = ``icmlm-train``."""
import sys

from .cli import main

sys.exit(main())

"""Plain Keras in one process: python plain.py N EPOCHS."""

import sys

from bench_models import plain_loop

plain_loop(int(sys.argv[1]), int(sys.argv[2]))

"""Plain Keras in one process: python plain.py N EPOCHS [gen]."""

import sys

from bench_models import plain_gen_loop, plain_loop

if sys.argv[3:] == ["gen"]:
    plain_gen_loop(int(sys.argv[1]), int(sys.argv[2]))
else:
    plain_loop(int(sys.argv[1]), int(sys.argv[2]))

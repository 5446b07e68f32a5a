"""``python -m netrain``: the netrain command line (as the ``netrain`` script)."""

from netrain.cli import main

main()

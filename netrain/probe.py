"""Old name of netrain.train.probe (the configuration probe's child side), kept for a
``python -m netrain.probe`` started by a netrain of before the layout by stage."""

import sys

from netrain.train.probe import main

if __name__ == "__main__":
    sys.exit(main())

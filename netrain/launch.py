"""Old name of netrain.execute.launcher, kept because the scripts of batches made before the
layout by stage run ``python -m netrain.launch``; new batches run the launcher by its name."""

from netrain.execute.launcher import main

if __name__ == "__main__":
    from netrain.exits import exit_now

    exit_now(main())

"""Old name of netrain.track.shipper, kept because tasks of batches made before the layout by
stage start ``python -m netrain.shipper``; new ones start the shipper by its name."""

from netrain.track.shipper import main

if __name__ == "__main__":
    from netrain.exits import exit_now

    exit_now(main())

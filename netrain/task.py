"""Old name of netrain.train.task, kept because the entry point of batches made before the
layout by stage (their mlproject/entry.py) imports ``run_entry`` from here."""

from netrain.train.task import run_entry

__all__ = ["run_entry"]

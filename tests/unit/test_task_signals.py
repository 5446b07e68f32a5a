"""A task's signal handlers only set a flag, compose with the user's own, and are restored."""

from __future__ import annotations

import os
import signal

from netrain.errors import note_interrupt, pending_interrupt
from netrain.train.stops import install_signal_handlers, restore_signal_handlers


def test_flag_then_the_users_handler_then_restored() -> None:
    seen: list[int] = []

    def users(signum: int, frame: object) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGUSR1, users)
    try:
        old = install_signal_handlers()
        os.kill(os.getpid(), signal.SIGUSR1)  # SLURM's time-limit warning
        assert pending_interrupt() == signal.SIGUSR1  # training stops at the next batch
        assert seen == [signal.SIGUSR1]  # and the user's handler still ran
        restore_signal_handlers(old)
        assert signal.getsignal(signal.SIGUSR1) is users
    finally:
        note_interrupt(None)
        signal.signal(signal.SIGUSR1, before)

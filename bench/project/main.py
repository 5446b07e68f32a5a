from bench_models import configure

from netrain import Netrain

Netrain(configure).run()

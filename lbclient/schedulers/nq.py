"""nq (LVS never queue): an idle instance if there is one, else shortest expected delay.

An idle instance (nothing in flight) serves the request at once whatever its weight, so it is
taken first (the first idle one in rotation); when none is idle this is ``sed``. Indexed from
64 instances (see ``_scan``).
"""

from __future__ import annotations

from lbclient.schedulers.sed import ShortestExpectedDelayScheduler


class NeverQueueScheduler(ShortestExpectedDelayScheduler):
    """An idle instance if any, otherwise the shortest expected delay."""

    name = "nq"
    idle_first = True

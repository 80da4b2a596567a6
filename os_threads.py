"""A blocking system call where it holds up only its caller.

Under the gevent worker (gunicorn.conf.py patches the standard library before the app is
loaded), every call a worker holds runs on the worker's one OS thread. A system call that blocks
there stops them all until it returns: the fsyncs of a WAL checkpoint, a wait for another
process's `flock`. `run` hands such a call to one of gevent's pool of real OS threads and lets
the caller wait cooperatively, so the worker's other calls go on meanwhile. Without gevent's
patches (the gthread worker, the CLI, tests) every thread is an OS thread and `run` calls it in
place.

What runs there must not touch the patched primitives (locks, events, sleeps: they belong to the
worker's thread): a system call on objects the caller holds for the duration, nothing more.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def run(call: Callable[..., Result], *args) -> Result:
    """`call(*args)` on a real OS thread when the worker is gevent's, else here; its result or
    its exception."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return call(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(call, args)

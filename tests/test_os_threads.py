"""Under the gevent worker a blocking system call runs on an OS thread (`os_threads.run`), so the
worker's other calls go on meanwhile: checked in a process patched as gunicorn.conf.py patches
one, with a greenlet that ticks every 10 ms while another blocks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.servers import REPO

PATCHED = """
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
import os_threads

ticks = 0

def tick():
    global ticks
    while True:
        gevent.sleep(0.01)
        ticks += 1

def ticks_during(block):
    global ticks
    ticker = gevent.spawn(tick)
    gevent.sleep(0)
    ticks = 0
    block()
    counted = ticks
    ticker.kill()
    return counted

blocking_sleep = monkey.get_original("time", "sleep")
"""

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(0.4)
"""


def run_patched(body: str) -> dict:
    script = PATCHED + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_blocking_call_holds_up_only_its_caller():
    found = run_patched("""
        in_place = ticks_during(lambda: blocking_sleep(0.3))
        off = ticks_during(lambda: os_threads.run(blocking_sleep, 0.3))
        print(json.dumps({"in_place": in_place, "off": off}))
    """)
    assert found["in_place"] == 0  # the same call made on the worker's thread stops every greenlet
    assert found["off"] >= 10


def test_a_result_and_an_exception_come_back_to_the_caller():
    found = run_patched("""
        def fail():
            raise KeyError("k")
        try:
            os_threads.run(fail)
            raised = None
        except KeyError as exc:
            raised = str(exc)
        print(json.dumps({"sum": os_threads.run(sum, [1, 2, 3]), "raised": raised}))
    """)
    assert found == {"sum": 6, "raised": "'k'"}


def test_without_gevent_it_runs_in_place():
    import threading

    import os_threads

    assert os_threads.run(threading.get_ident) == threading.get_ident()


def test_a_sqlite_write_waiting_for_another_process_holds_up_no_other_call(tmp_path):
    """Another process holds the writers' turn (`flock` on `<database>-lock`) for 0.4 s; a write
    in this one waits for it without stopping the rest of the worker."""
    database = tmp_path / "spend.db"
    found = run_patched(f"""
        import subprocess
        from spend.engines import open_store
        store = open_store("sqlite:///{database}")
        store.engine.migrate()
        holder = subprocess.Popen(
            [sys.executable, "-c", {HOLD_LOCK!r}, "{database}-lock"], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        counted = ticks_during(lambda: store.engine.write(lambda c: c.execute("SELECT 1").fetchone()))
        waited = time.monotonic() - started
        holder.wait()
        print(json.dumps({{"ticks": counted, "waited": waited}}))
    """)
    assert found["waited"] >= 0.2  # it did wait for the other process
    assert found["ticks"] >= 10

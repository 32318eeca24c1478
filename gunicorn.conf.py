"""The web server's settings, one place for `sacco up`, the Docker image and compose.

gunicorn reads this file (`sacco up` names it; the image runs from its folder). A
deployment changes any of it without editing: `WEB_CONCURRENCY` sets the number of
processes, and `GUNICORN_CMD_ARGS` (e.g. `--threads 4`) overrides any setting but one:
the app is preloaded (below), a switch gunicorn can only turn on, so `--reload` does not
reload code here; restart the server instead.

Sync workers, one request at a time per process, as many processes as gunicorn's own
sizing rule (2 x cores + 1). A USSD hop is a few milliseconds of CPU and two short Redis
and one database round trips, so a process that takes the next connection only when it is
free spreads the phones evenly over the cores. The threaded worker accepted connections
ahead of its threads and queued them behind one process's GIL while another idled: on
two cores at 50 connections its first hop had a p99 of 59-155 ms, the sync workers' 42-70
ms, median 47.6 (benchmarks/ussd_load.py --first-hop, in the issue 18 note). Sync workers expect a
buffering reverse proxy in front for slow clients (gunicorn's design notes), which
production has anyway: the callbacks must be https and gunicorn here speaks plain HTTP.
"""

import os

# PostgreSQL's default max_connections is 100, shared with the RQ and close-of-business
# workers: a many-core host gets a dozen web processes, not 2 x cores + 1 of them.
MAX_DEFAULT_WORKERS = 12

# The cores this process may use (a container's cpuset), where the platform tells.
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * (_cores or 1) + 1, MAX_DEFAULT_WORKERS))
worker_class = "sync"
# A sync worker still in one request after this long is killed and replaced. The longest
# request we serve on purpose is the console's loan-book import, which writes a book of up
# to 20,000 loans in the request (about 15 s on PostgreSQL here, longer on SQLite or a
# slower machine): cut off, it would stop between two batches. A hung request still ends.
timeout = 300
# The app is imported once, in the master, and the workers are forked from it. Each import
# is seconds of CPU (3 s on a quiet 2-core box): five workers importing it side by side
# with the RQ worker and the scheduler kept `sacco up` from answering for 10 s after
# gunicorn listened, over 20 s on a loaded CI box. A new release is a new process anyway
# (the image, `sacco up`), never a HUP that would need each worker to re-import.
preload_app = True


def post_fork(server, worker):  # noqa: ANN001, ANN201, ARG001 - gunicorn's hook signature
    """A connection the master's import may have pooled is the master's: a worker that used
    it too would interleave its queries with another's on one socket (SQLAlchemy's
    "Using Connection Pools with Multiprocessing or os.fork()"). Each worker opens its own."""
    from app.extensions import db
    from wsgi import app

    with app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=False)


# We supervise the processes ourselves: gunicorn 27's control socket defaults to one path
# per user, so a second local copy (or the suite) would take it over.
control_socket_disable = True

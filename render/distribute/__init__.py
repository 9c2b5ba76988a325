"""Builds spread over Celery workers through a Redis broker (``[schedule] executor = "celery"``).

broker: the Celery app made from the host's config (the broker URL is a
``Secret``); sitelock: a site's lock held across machines, in Redis, with a
lease; carry: the build record stored privately in the store, by the groups
that changed, and restored on a worker whose record is not the latest;
affinity: heartbeats, busy counts and last builders in Redis; tasks: what a
worker runs; night: a night's dispatch, each site to its last builder when
that worker is free; enqueue: what the enqueuing process (``render
nightly``, the scheduler) sends, waits for, and writes to its ledger.
"""

"""Builds spread over Celery workers through a Redis broker (``[schedule] executor = "celery"``).

broker: the Celery app made from the host's config (the broker URL is a
``Secret``); sitelock: a site's lock held across machines, in Redis, with a
lease; carry: the build record stored privately in the store and restored on
a worker with empty state; tasks: what a worker runs; enqueue: what the
enqueuing process (``render nightly``, the scheduler) sends, waits for, and
writes to its ledger.
"""

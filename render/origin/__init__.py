"""``render origin``: the production origin, an ASGI application under uvicorn.

It serves every site's live version from the store by ``Host`` header (the same
resolution as ``render serve``), and renders on request a page whose data
changed since the last build (``render.origin.fresh``).
"""

"""The edge Worker (``edge/`` in the repository): its generated routing table and its deploy command."""

"""A run's bookkeeping: the ledger, per-site locks and the build log."""

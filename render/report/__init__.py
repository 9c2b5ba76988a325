"""Reports over the ledger and the store: the report document, the dashboard, the metrics."""

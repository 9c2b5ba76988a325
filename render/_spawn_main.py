"""Stands in for ``__main__`` while render starts its worker processes (see workers._light_main)."""

"""The check stage: what a crawler and a browser would see, and the gate before publishing."""

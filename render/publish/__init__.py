"""The publish stage: the object store, version trees, the root pointer, CDN purges."""

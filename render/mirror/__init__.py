"""The mirror: pulling live versions from the store into nginx's release folders."""

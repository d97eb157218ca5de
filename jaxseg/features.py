"""jaxseg.features (being written)."""

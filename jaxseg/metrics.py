"""jaxseg.metrics (being written)."""

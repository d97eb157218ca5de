"""jaxseg.data (being written)."""

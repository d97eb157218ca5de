"""jaxseg.gmm (being written)."""

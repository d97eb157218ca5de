"""jaxseg.kmeans (being written)."""

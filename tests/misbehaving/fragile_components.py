"""A component module that cannot be imported: it raises RuntimeError at import."""

raise RuntimeError("fragile: no GPU driver found")

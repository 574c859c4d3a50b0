"""Peer servers for the benchmark (BentoML as its docs write it, LitServe, Triton through PyTriton), each in its own pinned venv."""

"""HTTP service: serves the exported models with BentoML (see service.service)."""

"""Load, latency, memory and cold-start benchmarks of the service against a bare Starlette baseline (`python -m benchmarks.run`)."""

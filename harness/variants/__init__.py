"""Service variants that the harness measures against the real service (never served by the project)."""

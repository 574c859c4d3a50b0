"""Reliability checks run by command (long fuzz, overload, crash, soak); see reliability/README.md."""

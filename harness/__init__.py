"""Everything that drives a real server from outside: benchmarks, fuzzing, overload, crash and soak runs (see harness/README.md)."""

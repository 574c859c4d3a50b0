"""`python -m harness.peers`: the service, the bare baseline and the peers in one benchmark run (harness/peers/bench.py)."""

from harness.peers.bench import main

main()

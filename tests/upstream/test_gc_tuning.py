"""Canary for service/upstream/gc_tuning.py: CPython still collects the oldest generation every 10 middle ones by default (else revisit the tuning), and tune() sets a tenth of that and freezes the start-up heap."""

import gc
import subprocess
import sys

from service.upstream import gc_tuning


def test_cpython_still_runs_a_full_collection_every_10_middle_ones():
    """If this fails, CPython changed its collector's defaults (3.14's is incremental): measure again with harness.ab."""
    out = subprocess.run([sys.executable, "-c", "import gc; print(gc.get_threshold()[1:])"], capture_output=True,
                         text=True)
    assert out.stdout.strip() == "(10, 10)"  # the youngest generation's threshold differs: 700 to 3.12, 2000 on 3.13


def test_tune_freezes_the_heap_and_collects_the_oldest_generation_a_tenth_as_often():
    before = gc.get_threshold()
    try:
        gc_tuning.tune()
        assert gc.get_threshold() == (*before[:2], gc_tuning.FULL_GC_EVERY) and gc_tuning.FULL_GC_EVERY == 100
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

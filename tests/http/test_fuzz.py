"""Schema fuzzing (schemathesis) of every endpoint of a real `bentoml serve`.

The short run here is the CI part; `python -m harness.fuzz --cases 1000` is the long one (docs/reliability.md).
"""

import tempfile
from pathlib import Path

import pytest

from harness import fuzz

REPO = Path(__file__).resolve().parents[2]
CI_CASES = 100  # --max-examples per operation (the long run: 1,000); about 30 s on 2 cores


@pytest.fixture(scope="module")
def server(serve):
    with serve(".", REPO, tempfile.mkdtemp(prefix="bentoml-home-fuzz-")) as running:
        yield running


def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(server, tmp_path):
    url, log = server
    result = fuzz.run(url, cases=CI_CASES, report_dir=str(tmp_path), timeout=600)
    summary = fuzz.summary(result, CI_CASES, fuzz.SEED)
    assert result.ok, f"{result.output[-15000:]}\n{summary}"
    # Every inference endpoint was reached with data it accepted, not only with data it refused.
    for op in ("POST /temperature", "POST /digit", "POST /digits", "POST /digit/image"):
        assert result.sent[op].get("200", 0) > 0, summary
    log.seek(0)
    assert "status=5" not in log.read()  # the access log agrees: no 5xx

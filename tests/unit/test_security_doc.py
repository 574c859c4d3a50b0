"""SECURITY.md states the limits as they are: each number it gives beside a setting's name is that setting's default."""

import re
from pathlib import Path

from service.core import auth
from service.inference import images
from service.settings import Settings

TEXT = (Path(__file__).resolve().parents[2] / "SECURITY.md").read_text()
# "at most 32768 bytes (`SERVICE_MAX_HEADER_BYTES`)", "67108864 bytes of bodies (64 MiB, `SERVICE_INFLIGHT_BYTES`)"
STATED = re.compile(r"(\d[\d.]*)[^()\d`]*\((?:[^()`]*, )?`(SERVICE_\w+)`\)")
LIMITS = {"SERVICE_MAX_HEADER_BYTES", "SERVICE_MAX_BODY_BYTES", "SERVICE_BODY_TIMEOUT_S", "SERVICE_MAX_REQUESTS",
          "SERVICE_INFLIGHT_BYTES", "SERVICE_QUEUE_FLOOR", "SERVICE_QUEUE_TARGET_S"}


def test_every_number_beside_a_setting_is_its_default():
    defaults = {env: default for env, default, _ in Settings.documented()}
    stated = STATED.findall(TEXT)
    assert LIMITS <= {env for _, env in stated}, "SECURITY.md no longer states every limit"
    for number, env in stated:
        assert env in defaults, f"SECURITY.md names {env}, which is not a setting"
        assert float(number) == float(defaults[env]), f"SECURITY.md says {number} for {env}; the default is {defaults[env]}"
    named = set(re.findall(r"SERVICE_\w+", TEXT))
    assert named <= set(defaults), named - set(defaults)


def test_the_other_limits_it_states():
    assert f"at least {auth.MIN_LENGTH} characters" in TEXT
    assert f"at most {images.MAX_BYTES // 2**20} MiB and 4096×4096 pixels" in TEXT and images.MAX_PIXELS == 4096 * 4096
    timeout = re.search(r"(\d+) s \(`traffic.timeout`\)", TEXT)
    from service.service import ThermoDigits

    assert timeout and int(timeout.group(1)) == ThermoDigits.config["traffic"]["timeout"]

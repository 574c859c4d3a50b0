"""service/settings.py: every setting is read from its environment variable, validated, and listed for the README."""

import dataclasses

import pytest

from service.settings import Settings


def test_defaults():
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.backend, s.device, s.threads, s.max_batch) == ("onnx", "auto", 1, 64)
    assert (s.queue_target_s, s.concurrency, s.max_requests) == (0.6, 32, 512)


def test_every_field_is_read_from_its_variable():
    env = {"SERVICE_BACKEND": " TorchScript ", "SERVICE_DEVICE": "cpu", "SERVICE_THREADS": "2",
           "SERVICE_MAX_BATCH": "32", "SERVICE_BATCH_GATHER_MS": "0.5", "SERVICE_MAX_BODY_BYTES": "1000", "SERVICE_MAX_HEADER_BYTES": "2000",
           "SERVICE_BODY_TIMEOUT_S": "2.5", "SERVICE_QUEUE_TARGET_S": "0", "SERVICE_QUEUE_FLOOR": "7",
           "SERVICE_CONCURRENCY": "8", "SERVICE_MAX_REQUESTS": "99", "SERVICE_INFLIGHT_BYTES": "12345",
           "SERVICE_DRAIN_S": "2.5", "SERVICE_GRPC_PORT": "0", "SERVICE_API_TOKENS": " Abc,Def ", "SERVICE_API_TOKENS_FILE": " /run/Tokens ",
           "SERVICE_ADMIN_TOKENS": " Ghi ", "SERVICE_ADMIN_TOKENS_FILE": " /run/Admin ",
           "SERVICE_SERVING_FILE": " /etc/Serving.json ", "SERVICE_PAYLOAD_SHARE": "0.25", "SERVICE_PREDICTION_STATS": "0", "SERVICE_GRPC_ACCESS_LOG": "1",
           "SERVICE_PAYLOAD_DIR": " /var/Log ", "SERVICE_PAYLOAD_KEEP_DAYS": "3", "SERVICE_SKIP_PATCHES": " Door,gc "}
    s = Settings.from_env(env)
    assert s == Settings(backend="torchscript", device="cpu", threads=2, max_batch=32, batch_gather_ms=0.5, max_body_bytes=1000,
                         max_header_bytes=2000, body_timeout_s=2.5, queue_target_s=0.0, queue_floor=7, concurrency=8,
                         max_requests=99, max_inflight_bytes=12345, drain_s=2.5, grpc_port=0, api_tokens="Abc,Def", api_tokens_file="/run/Tokens",
                         admin_tokens="Ghi", admin_tokens_file="/run/Admin", serving_file="/etc/Serving.json",
                         prediction_stats=0, grpc_access_log=1, payload_share=0.25, payload_dir="/var/Log", payload_keep_days=3, skip_patches="door,gc")
    assert {f.metadata["env"] for f in dataclasses.fields(Settings)} == set(env)  # none forgotten


@pytest.mark.parametrize("env,message", [
    ({"SERVICE_BACKEND": "tensorrt"}, "SERVICE_BACKEND='tensorrt': choose one of onnx, torchscript"),
    ({"SERVICE_DEVICE": "tpu"}, "SERVICE_DEVICE='tpu': choose one of auto, cpu, cuda"),
    ({"SERVICE_THREADS": "-1"}, "SERVICE_THREADS=-1: must be >= 0"),
    ({"SERVICE_THREADS": "two"}, "SERVICE_THREADS='two': expected a int"),
    ({"SERVICE_MAX_BATCH": "0"}, "SERVICE_MAX_BATCH=0: must be >= 1"),
    ({"SERVICE_BATCH_GATHER_MS": "-1"}, "SERVICE_BATCH_GATHER_MS=-1.0: must be >= 0"),
    ({"SERVICE_CONCURRENCY": "0"}, "SERVICE_CONCURRENCY=0: must be >= 1"),
    ({"SERVICE_BODY_TIMEOUT_S": "0"}, "SERVICE_BODY_TIMEOUT_S=0.0: must be > 0"),
    ({"SERVICE_QUEUE_TARGET_S": "-1"}, "SERVICE_QUEUE_TARGET_S=-1.0: must be >= 0"),
    ({"SERVICE_DRAIN_S": "-1"}, "SERVICE_DRAIN_S=-1.0: must be >= 0"),
    ({"SERVICE_DRAIN_S": "nan"}, "SERVICE_DRAIN_S=nan: must be >= 0"),
    ({"SERVICE_GRPC_PORT": "65536"}, "SERVICE_GRPC_PORT=65536: must be a port number, 1 to 65535, or 0 for no gRPC"),
    ({"SERVICE_GRPC_PORT": "-1"}, "SERVICE_GRPC_PORT=-1: must be a port number, 1 to 65535, or 0 for no gRPC"),
    ({"SERVICE_QUEUE_TARGET_S": "nan"}, "SERVICE_QUEUE_TARGET_S=nan: must be >= 0"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError) as e:
        Settings.from_env(env)
    assert str(e.value) == message


def test_secrets_keep_their_case_and_are_never_shown():
    s = Settings.from_env({"SERVICE_API_TOKENS": "Secret-Token-0123456789"})
    assert s.api_tokens == "Secret-Token-0123456789"
    assert "Secret" not in repr(s) and s.shown()["api_tokens"] == "(set)" and s.shown()["api_tokens_file"] == ""


def test_documented_lists_every_setting_with_its_default():
    rows = Settings.documented()
    assert [r[0] for r in rows] == [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert ("SERVICE_QUEUE_TARGET_S", "0.6") == rows[8][:2]
    assert all(r[2] for r in rows)


def test_the_configuration_docs_list_every_setting_as_generated():
    from harness import docs

    assert docs.stale() == [], "run python -m harness.docs"
    text = (docs.REPO / "docs" / "configuration.md").read_text()
    for env, default, _ in Settings.documented():
        assert f"| `{env}` | {f'`{default}`' if default else '(unset)'} |" in text, env

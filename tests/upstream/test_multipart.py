"""Canaries for service/upstream/multipart.py: the BentoML behaviour it works around must still exist (else delete the patch)."""

import asyncio
import io

import pytest
from PIL import Image
from starlette.requests import Request

from service.upstream import multipart


def multipart_request(field: str, data: bytes, copies: int = 1) -> Request:
    boundary = "XyZ"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"d.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    body = part * copies + f"--{boundary}--\r\n".encode()
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, "PNG")
    return buf.getvalue()


def test_upstream_still_fails_on_a_binary_part_under_a_wrong_name():
    """If this fails, BentoML fixed the bug: remove multipart._parse_request and this test."""
    from service.service import ThermoDigits

    from _bentoml_impl.serde import MultipartSerde

    spec = ThermoDigits.apis["digit_image"].input_spec
    with pytest.raises(UnicodeDecodeError):
        asyncio.run(multipart.UPSTREAM_PARSE_REQUEST(MultipartSerde(), multipart_request("file", png_bytes()), spec))


def test_patched_parser_raises_bad_input_naming_the_field():
    from bentoml.exceptions import BadInput
    from service.service import ThermoDigits

    from _bentoml_impl.serde import MultipartSerde

    spec = ThermoDigits.apis["digit_image"].input_spec
    with pytest.raises(BadInput, match="field: image"):
        asyncio.run(MultipartSerde().parse_request(multipart_request("file", png_bytes()), spec))


def test_upstream_still_takes_one_of_two_files_silently(client, monkeypatch):
    """If this fails, BentoML refuses a repeated file field itself: remove that check from multipart._parse_request."""
    from _bentoml_impl.serde import MultipartSerde

    monkeypatch.setattr(MultipartSerde, "parse_request", multipart.UPSTREAM_PARSE_REQUEST)
    data = png_bytes()
    r = client.post("/digit/image", files=[("image", ("a.png", data, "image/png")), ("image", ("b.png", data, "image/png"))])
    assert r.status_code == 200, r.text


def test_patched_parser_refuses_two_files_in_one_field():
    from bentoml.exceptions import BadInput
    from service.service import ThermoDigits

    from _bentoml_impl.serde import MultipartSerde

    spec = ThermoDigits.apis["digit_image"].input_spec
    with pytest.raises(BadInput, match="must hold one file; this upload has 2"):
        asyncio.run(MultipartSerde().parse_request(multipart_request("image", png_bytes(), 2), spec))

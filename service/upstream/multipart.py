"""BentoML 1.4.40's multipart parsing (``MultipartSerde.parse_request``) made to answer 400 where it answers 500, take uploads only, and refuse ambiguous fields."""

from __future__ import annotations

from _bentoml_impl.serde import MultipartSerde
from bentoml.exceptions import BadInput
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

UPSTREAM_PARSE_REQUEST = MultipartSerde.parse_request


async def _parse_request(self, request, cls):
    fields = getattr(cls, "multipart_fields", ())
    try:
        form = await request.form()  # Starlette caches the parsed form; upstream reads the same object
    except HTTPException as e:
        # Starlette refuses a malformed multipart body (no boundary, bad part headers) with an
        # HTTPException(400), which BentoML's endpoint wrapper turns into a 500.
        if 400 <= e.status_code < 500:
            raise BadInput(f"malformed multipart body: {e.detail}") from None
        raise
    for name in fields:
        parts = form.getlist(name)
        if len(parts) > 1:
            # Upstream would silently take one of them: refuse the ambiguity instead.
            raise BadInput(f"field {name!r} must hold one file; this upload has {len(parts)}")
        if any(not isinstance(part, UploadFile) for part in parts):
            # Upstream hands a text part to ensure_file(), which downloads it when it looks like a
            # URL: a server-side fetch chosen by the client (and a 500 when it fails). Uploads only.
            raise BadInput(f"field {name!r} must be uploaded as a file, not as text; URLs are not fetched")
    try:
        return await UPSTREAM_PARSE_REQUEST(self, request, cls)
    except UnicodeDecodeError:
        # BentoML json.loads() every multipart part that is not one of the endpoint's file fields,
        # so a binary file under a wrong field name raises UnicodeDecodeError and becomes a 500.
        # It is the client's mistake: answer 400 and name the field it should have used.
        expected = ", ".join(sorted(getattr(cls, "multipart_fields", ()))) or "(none)"
        raise BadInput(f"multipart upload has a binary part under an unexpected field name; "
                       f"send the file in field: {expected}") from None


def install() -> None:
    """Idempotent: MultipartSerde.parse_request checks the form first."""
    MultipartSerde.parse_request = _parse_request

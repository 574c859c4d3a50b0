"""BentoML serves and builds the corrected OpenAPI document (service/api/openapi.py's ``fix``) for this service: ``Service.openapi_spec`` wrapped.

BentoML builds the document in ``_bentoml_sdk.service.openapi.generate_spec`` each time the property
``Service.openapi_spec`` is read, by the /docs.json view and by ``bentoml build`` (which writes
``apis/openapi.yaml``). There is no public hook for it: the property is wrapped so that, for the one
service object given, the returned specification's ``asdict()`` (what both serialise) is ``fix(...)``'d.
"""

from __future__ import annotations

from typing import Any

from service.api.openapi import fix


def upstream_openapi_spec():
    from _bentoml_sdk.service.factory import Service

    prop = Service.__dict__["openapi_spec"]
    return getattr(prop.fget, "__wrapped_upstream__", prop.fget)


def install(service: Any) -> None:
    """Idempotent: serve ``fix(...)`` of the generated document for ``service`` (other services untouched)."""
    import yaml
    from _bentoml_sdk.service.factory import Service
    from bentoml._internal.service.openapi.specification import OpenAPISpecification

    class FixedSpecification(OpenAPISpecification):
        # asdict() is what both the /docs.json view and the YAML dumper (bentoml build) serialise.
        def asdict(self) -> dict[str, Any]:
            return fix(super().asdict())

    yaml.add_representer(FixedSpecification, lambda dumper, spec: dumper.represent_dict(spec.asdict()))

    upstream = upstream_openapi_spec()
    targets = set(getattr(Service.__dict__["openapi_spec"].fget, "__targets__", ())) | {id(service)}

    def openapi_spec(self):
        spec = upstream(self)
        if id(self) not in targets or not isinstance(spec, OpenAPISpecification):
            return spec
        fixed = object.__new__(FixedSpecification)
        for field in spec.__attrs_attrs__:
            object.__setattr__(fixed, field.name, getattr(spec, field.name))
        return fixed

    openapi_spec.__wrapped_upstream__ = upstream
    openapi_spec.__targets__ = targets
    Service.openapi_spec = property(openapi_spec, doc=Service.__dict__["openapi_spec"].__doc__)

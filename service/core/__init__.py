"""The serving core, below every transport: neutral requests and answers, the data plane, admission, tokens and errors.

Nothing here imports HTTP (Starlette, BentoML's IO) or gRPC; the transports (service/api/, service/v2/) parse their
wire formats into ``service.core.protocol``'s requests, call ``DataPlane``, and map ``ServingError`` through
``service.core.errors``' one table.
"""

"""KServe's SDK over gRPC (InferenceGRPCClient) sends a job's calls (JSON on stdin) and prints what it got back as JSON; run by testkit/clients.py in the clients' venv."""

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.infer_type import RequestedOutput

DTYPES = {"FP32": np.float32, "FP64": np.float64}


def request(r: dict) -> InferRequest:
    inputs = []
    for t in r["inputs"]:
        if t["raw"]:  # numpy data: to_grpc() sends it in raw_input_contents
            data = np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
        else:  # a list: to_grpc() sends it in contents.<datatype>_contents
            data = list(t["data"])
        inputs.append(InferInput(t["name"], t["shape"], t["datatype"], data=data))
    outputs = [RequestedOutput(o["name"], {"binary_data": o["binary"]} if o.get("binary") is not None else None)
               for o in r.get("outputs") or []]
    return InferRequest(r["model"], inputs, request_id=r.get("id"), request_outputs=outputs or None,
                        model_version=r.get("version"))


async def call(client: InferenceGRPCClient, c: dict, headers) -> dict:
    if c["call"] == "live":
        return {"live": await client.is_server_live(headers=headers)}
    if c["call"] == "ready":
        return {"ready": await client.is_server_ready(headers=headers)}
    if c["call"] == "model_ready":
        return {"ready": await client.is_model_ready(c["model"], headers=headers)}
    response = await client.infer(request(c), headers=headers)
    return {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
                         "data": o.as_numpy().ravel().tolist(), "raw": o._raw_data is not None}
                        for o in response.outputs]}


async def main(job: dict) -> list:
    client = InferenceGRPCClient(job["url"], retries=0, timeout=60)
    headers = tuple(job.get("headers", {}).items()) or None
    results = []
    for c in job["calls"]:
        try:
            results.append({"ok": True, **await call(client, c, headers)})
        except grpc.aio.AioRpcError as e:
            results.append({"ok": False, "code": e.code().name, "message": e.details(),
                            "trailing": dict(e.trailing_metadata() or ())})
    await client.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))

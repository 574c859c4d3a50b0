"""KServe's SDK over REST (InferenceRESTClient, protocol v2) sends a job's requests (JSON on stdin) and prints what it got back as JSON; run by testkit/clients.py in the clients' venv."""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


def request(r: dict) -> InferRequest:
    inputs = []
    for t in r["inputs"]:
        x = InferInput(t["name"], t["shape"], t["datatype"])
        array = np.asarray(t["data"], dtype={"FP32": np.float32, "FP64": np.float64}[t["datatype"]]).reshape(t["shape"])
        x.set_data_from_numpy(array, binary_data=t["raw"])
        inputs.append(x)
    outputs = [RequestedOutput(o["name"], {"binary_data": o["binary"]} if o.get("binary") is not None else None)
               for o in r.get("outputs") or []]
    return InferRequest(r.get("body_model", r["model"]), inputs, request_id=r.get("id"),
                        request_outputs=outputs or None, model_version=r.get("version"))


async def main(job: dict) -> list:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    results = []
    for r in job["requests"]:
        headers = {}
        try:
            response = await client.infer(job["url"], request(r), model_name=r["model"], headers=job.get("headers"),
                                          response_headers=headers)
        except httpx.HTTPStatusError as e:
            results.append({"ok": False, "status": e.response.status_code, "message": e.response.json()["error"]})
            continue
        results.append({"ok": True, "model_name": response.model_name, "model_version": response.model_version,
                        "id": response.id,
                        "outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
                                     "data": o.as_numpy().ravel().tolist(),
                                     # binary tensor data (the SDK keeps no mark of it on the output)
                                     "raw": headers["content-type"] == "application/octet-stream"}
                                    for o in response.outputs]})
    await client.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))

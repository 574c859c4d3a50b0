"""NVIDIA's tritonclient over gRPC (tritonclient.grpc) sends a job's calls (JSON on stdin) and prints what it got back as JSON; run by testkit/clients.py in the clients' venv."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

DTYPES = {"FP32": np.float32, "FP64": np.float64}


def call(client: grpcclient.InferenceServerClient, c: dict, headers: dict | None) -> dict:
    if c["call"] == "live":
        return {"live": client.is_server_live(headers=headers)}
    if c["call"] == "ready":
        return {"ready": client.is_server_ready(headers=headers)}
    if c["call"] == "model_ready":
        return {"ready": client.is_model_ready(c["model"], c.get("version", ""), headers=headers)}
    if c["call"] == "server_metadata":
        return MessageToDict(client.get_server_metadata(headers=headers), preserving_proto_field_name=True)
    if c["call"] == "model_metadata":
        return MessageToDict(client.get_model_metadata(c["model"], c.get("version", ""), headers=headers),
                             preserving_proto_field_name=True)
    inputs = []
    for t in c["inputs"]:  # tritonclient.grpc sends every input in raw_input_contents
        x = grpcclient.InferInput(t["name"], t["shape"], t["datatype"])
        x.set_data_from_numpy(np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"]))
        inputs.append(x)
    outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in c.get("outputs") or []] or None
    result = client.infer(c["model"], inputs, model_version=c.get("version", ""), request_id=c.get("id", ""),
                          outputs=outputs, headers=headers, priority=c.get("priority", 0))
    response = result.get_response()
    return {"model_name": response.model_name, "model_version": response.model_version, "id": response.id,
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
                         "data": result.as_numpy(o.name).ravel().tolist(), "dtype": str(result.as_numpy(o.name).dtype),
                         "raw": len(response.raw_output_contents) > 0} for o in response.outputs]}


def main(job: dict) -> list:
    client = grpcclient.InferenceServerClient(job["url"])
    results = []
    for c in job["calls"]:
        try:
            results.append({"ok": True, **call(client, c, job.get("headers"))})
        except InferenceServerException as e:
            results.append({"ok": False, "code": e.status(), "message": e.message()})
    client.close()
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.load(sys.stdin))))

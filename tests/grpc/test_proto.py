"""The committed v2 gRPC protocol (service/v2/proto/): its generated code is what the pinned grpcio-tools makes of the .proto, and the .proto is KServe's, message for message and method for method."""

import filecmp
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict

from service.v2.proto import grpc_predict_v2_pb2
from testkit import clients

REPO = Path(__file__).resolve().parents[2]
PROTO = "service/v2/proto/grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py")


def test_generated_code_is_what_grpcio_tools_makes_of_the_proto(tmp_path):
    """Regenerate with the command in the .proto's header; edit the .proto, then run it and commit all three."""
    out = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}", PROTO], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fresh, committed = tmp_path / "service" / "v2" / "proto", REPO / "service" / "v2" / "proto"
    stale = [name for name in GENERATED if not filecmp.cmp(fresh / name, committed / name, shallow=False)]
    assert stale == [], (f"{stale} differ from what grpcio-tools generates now from {PROTO}: from the repository root, "
                         f"python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. {PROTO}")


def by_name(items: list[dict]) -> dict[str, dict]:
    return {item["name"]: item for item in items}


def test_the_proto_is_kserves(oip_clients):
    """Every message and method here is KServe's, unchanged (its SDK adds the model-repository extension's)."""
    ours = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(ours)
    ours = MessageToDict(ours)
    theirs = clients.run(oip_clients, "kserve_descriptor")
    assert ours["package"] == theirs["package"] == "inference"
    messages, their_messages = by_name(ours["messageType"]), by_name(theirs["messageType"])
    assert {name: their_messages.get(name) for name in messages} == messages
    assert set(their_messages) - set(messages) == {
        "RepositoryModelLoadRequest", "RepositoryModelLoadResponse",
        "RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"}
    [service], [their_service] = ours["service"], theirs["service"]
    methods, their_methods = by_name(service["method"]), by_name(their_service["method"])
    assert service["name"] == their_service["name"] == "GRPCInferenceService"
    assert {name: their_methods.get(name) for name in methods} == methods
    assert set(their_methods) - set(methods) == {"RepositoryModelLoad", "RepositoryModelUnload"}

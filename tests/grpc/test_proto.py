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


REPOSITORY_MESSAGES = {"ModelRepositoryParameter", "RepositoryIndexRequest", "RepositoryIndexResponse",
                       "RepositoryModelLoadRequest", "RepositoryModelLoadResponse", "RepositoryModelUnloadRequest",
                       "RepositoryModelUnloadResponse"}
REPOSITORY_METHODS = {"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}


def ours() -> dict:
    proto = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(proto)
    return MessageToDict(proto)


def test_the_proto_is_kserves_but_for_the_repository_extension(oip_clients):
    """Every message and method here but the model repository extension's is KServe's, unchanged."""
    mine, theirs = ours(), clients.run(oip_clients, "kserve_descriptor")
    assert mine["package"] == theirs["package"] == "inference"
    messages, their_messages = by_name(mine["messageType"]), by_name(theirs["messageType"])
    kept = {name: m for name, m in messages.items() if name not in REPOSITORY_MESSAGES}
    assert {name: their_messages.get(name) for name in kept} == kept
    [service], [their_service] = mine["service"], theirs["service"]
    methods, their_methods = by_name(service["method"]), by_name(their_service["method"])
    assert service["name"] == their_service["name"] == "GRPCInferenceService"
    kept = {name: m for name, m in methods.items() if name not in REPOSITORY_METHODS}
    assert {name: their_methods.get(name) for name in kept} == kept
    # KServe's SDK has repository RPCs of the same names with other messages (model_name as field 1): not Triton's
    assert their_messages["RepositoryModelLoadRequest"] != messages["RepositoryModelLoadRequest"]


def test_the_repository_extension_is_tritons(oip_clients):
    """The model repository extension's messages and methods are Triton's, as tritonclient.grpc sends them."""
    mine, theirs = ours(), clients.run(oip_clients, "triton_descriptor")
    messages, their_messages = by_name(mine["messageType"]), by_name(theirs["messageType"])
    assert {name: their_messages[name] for name in REPOSITORY_MESSAGES} == {
        name: messages[name] for name in REPOSITORY_MESSAGES}
    methods = by_name(mine["service"][0]["method"])
    their_methods = by_name(next(s for s in theirs["service"] if s["name"] == "GRPCInferenceService")["method"])
    assert {name: their_methods[name] for name in REPOSITORY_METHODS} == {name: methods[name] for name in REPOSITORY_METHODS}

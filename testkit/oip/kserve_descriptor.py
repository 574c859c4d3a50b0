"""Prints the descriptor of the v2 gRPC protocol as KServe's SDK compiled it (kserve/protocol/grpc/grpc_predict_v2_pb2.py) as JSON; run by testkit/clients.py in the clients' venv."""

import json

from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict
from kserve.protocol.grpc import grpc_predict_v2_pb2

if __name__ == "__main__":
    proto = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(proto)
    print(json.dumps(MessageToDict(proto)))

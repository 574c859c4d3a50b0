"""Prints the descriptor of Triton's gRPC protocol as tritonclient compiled it (tritonclient/grpc/service_pb2.py) as JSON; run by testkit/clients.py in the clients' venv."""

import json

from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2

if __name__ == "__main__":
    proto = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(proto)
    print(json.dumps(MessageToDict(proto)))

"""Writes the FileDescriptorSet of the pinned flwr wheel's Fleet API protos.

The flwr wheel ships compiled *_pb2.py modules, not .proto files; each module embeds the serialized
FileDescriptorProto that protoc produced from Flower's .proto sources, so this set is exactly the pinned
version's schema. `npm run proto` turns the committed set into TypeScript (buf + protoc-gen-es).

Run: interop/.venv-flower/bin/python interop/flower/descriptors.py src/federated/proto/flwr.binpb
"""

import sys

import flwr
from flwr.proto import fleet_pb2
from google.protobuf import descriptor_pb2


def collect(fd, out, seen):
    """Adds fd and its dependencies, dependencies first (the order buf expects)."""
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        collect(dep, out, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    out.file.append(proto)


def main(path):
    fds = descriptor_pb2.FileDescriptorSet()
    collect(fleet_pb2.DESCRIPTOR, fds, set())
    with open(path, "wb") as f:
        f.write(fds.SerializeToString(deterministic=True))
    print(f"flwr {flwr.__version__}: {len(fds.file)} files -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])

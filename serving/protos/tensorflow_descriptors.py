"""Write the FileDescriptorSet of the TensorFlow protos that session_bundle_config.proto imports.

TensorFlow's wheel ships these messages compiled (`tensorflow.core.protobuf.config_pb2`) but
not their .proto sources; protoc reads the descriptors instead (`--descriptor_set_in`), so the
vendored TF Serving proto compiles unchanged against the installed TensorFlow.

Usage: python serving/protos/tensorflow_descriptors.py OUT.binpb
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """config.proto and named_tensor.proto with every file they import, dependencies first."""
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2

    ordered: list = []
    seen: set[str] = set()

    def visit(file_descriptor) -> None:
        if file_descriptor.name in seen:
            return
        seen.add(file_descriptor.name)
        for dependency in file_descriptor.dependencies:
            visit(dependency)
        ordered.append(file_descriptor)

    visit(config_pb2.DESCRIPTOR)
    visit(named_tensor_pb2.DESCRIPTOR)
    files = descriptor_pb2.FileDescriptorSet()
    for file_descriptor in ordered:
        file_descriptor.CopyToProto(files.file.add())
    return files


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as out:
        out.write(descriptor_set().SerializeToString())

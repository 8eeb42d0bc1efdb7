"""Write the FileDescriptorSet of the TensorFlow protos that session_bundle_config.proto imports.

TensorFlow's wheel ships these messages compiled (`tensorflow.core.protobuf.config_pb2`) but
not their .proto sources; protoc reads the descriptors instead (`--descriptor_set_in`), so the
vendored TF Serving proto compiles unchanged against the installed TensorFlow.

Usage: python serving/protos/tensorflow_descriptors.py OUT.binpb
"""

from __future__ import annotations

import importlib.util
import sys
import types

from google.protobuf import descriptor_pb2


def _skip_tensorflow_init() -> None:
    """Let `tensorflow.core...pb2` modules import without running tensorflow/__init__.py.

    The package's __init__ loads the whole runtime (about 10 s, 20 s on a busy machine);
    the generated message modules need only the package's directories. A stand-in
    package module with TensorFlow's own search path gives them that, in this short-lived
    process only.
    """
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("TensorFlow is not installed: its compiled protos are read from it")
    package = types.ModuleType("tensorflow")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = package


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """config.proto and named_tensor.proto with every file they import, dependencies first."""
    _skip_tensorflow_init()
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

"""The conformance corpus's own model, `tfs_corpus`: one SavedModel whose signatures turn
TF Serving's C++ unit tests into requests.

TF Serving's codec and classifier tests run on hand-made TensorInfoMaps and fake sessions.
This model declares the same maps as real signatures, so a request to it goes through the
JSON codec (or TensorProto decoding), a real TensorFlow Session and back:

- identity signatures: each output is its input under the same alias, so a valid request
  comes back as TF Serving's writer formats it, and an invalid one is TF Serving's 400.
  One per dtype (alias `default`, as `json_tensor_test.cc`'s single-input maps), and one per
  multi-input map the C++ tests declare (same aliases and dtypes; shapes unknown, as there);
- signatures whose outputs the C++ tests hand-build: rank-0 (also a rank-0 string),
  complex64, half and uint16 outputs, zero-batch and mismatched-batch outputs;
- `with_defaults` (a SignatureDef.defaults entry) and `custom_method` (a method_name that is
  none of predict/classify/regress, as `predict_util_test.cc`'s MethodNameCheck);
- classify and regress signatures that compute what `classifier_test.cc`'s and
  `regressor_test.cc`'s FakeSessions return, from the same tf.Example features.

Written with TF1 builder APIs: they write the SignatureDef (method_name, defaults) exactly
as given, which `tf.saved_model.save` does not promise.
"""

from __future__ import annotations

from pathlib import Path

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

# Signature key -> TensorFlow dtype name, for the single-input identity signatures.
IDENTITY_DTYPES = {
    "float": "float32",
    "double": "float64",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "string",
    "half": "float16",
}

# Multi-input (and single named-input) identity signatures: key -> {alias: dtype}, each the
# TensorInfoMap of the json_tensor_test.cc test named in the comment.
NAMED_IDENTITY = {
    # MultipleNamedTensor
    "multiple_named_tensor": {
        "int_tensor": "int32",
        "str_tensor": "string",
        "float_tensor": "float32",
        "dbl_tensor": "float64",
    },
    # SingleUnnamedTensorColumnarFormat
    "int_tensor": {"int_tensor": "int32"},
    # MultipleNamedTensorColumnarFormat
    "multiple_named_tensor_columnar": {
        "int_tensor": "int32",
        "str_tensor": "string",
        "bin_tensor": "string",
    },
    # MultipleNamedTensorErrors
    "multiple_named_tensor_errors": {"int_tensor": "int32", "str_tensor": "string"},
    "str_tensor": {"str_tensor": "string"},
    # FromJsonMultipleNamedTensors (the output TensorMap, as an identity)
    "from_json_multiple_named_tensors": {
        "int_tensor": "int32",
        "str_tensor": "string",
        "float_tensor": "float32",
        "double_scalar_tensor": "float64",
        "str_tensor_bytes": "string",
    },
    # FromJsonSingleBytesTensor
    "str_tensor_bytes": {"str_tensor_bytes": "string"},
}


def _signatures(tf):
    """Build the graph's ops in the default graph; return {key: SignatureDef}."""
    v1 = tf.compat.v1
    build = v1.saved_model.signature_def_utils.build_signature_def
    info = v1.saved_model.utils.build_tensor_info

    def placeholder(dtype: str, name: str, shape=None):
        return v1.placeholder(getattr(tf, dtype), shape=shape, name=name)

    def signature(inputs: dict, outputs: dict, method: str = PREDICT):
        return build(
            {a: info(t) for a, t in inputs.items()},
            {a: info(t) for a, t in outputs.items()},
            method,
        )

    def identity(key: str, aliases: dict[str, str], method: str = PREDICT):
        inputs = {a: placeholder(d, f"{key}/{a}") for a, d in aliases.items()}
        outputs = {a: tf.identity(t, name=f"{key}/{a}_out") for a, t in inputs.items()}
        return signature(inputs, outputs, method)

    sigs = {}
    for key, dtype in IDENTITY_DTYPES.items():
        sigs[key] = identity(key, {"default": dtype})
    # The default signature is json_tensor_test.cc's most common map, {default: DT_INT32},
    # so its requests need no signature_name; SingleUnnamedTensorWithSignature names
    # "predict_images" for the same map.
    sigs["serving_default"] = identity("serving_default", {"default": "int32"})
    sigs["predict_images"] = identity("predict_images", {"default": "int32"})
    for key, aliases in NAMED_IDENTITY.items():
        sigs[key] = identity(key, aliases)

    # predict_util_test.cc MethodNameCheck: "not/supported/method" is served (check is off).
    sigs["custom_method"] = identity("custom_method", {"default": "float32"})
    sigs["custom_method"].method_name = "not/supported/method"

    # FromJsonSingleTensorErrors: "tensor type: complex64" and "no shape information"
    # (the C++ test names that tensor "tensor").
    x = placeholder("float32", "complex64_output/default")
    sigs["complex64_output"] = signature(
        {"default": x}, {"tensor": tf.complex(x, tf.zeros_like(x), name="complex64_output/out")}
    )
    x = placeholder("float32", "scalar_output/default")
    sigs["scalar_output"] = signature(
        {"default": x}, {"tensor": tf.reduce_sum(x, name="scalar_output/out")}
    )
    # A rank-0 string output (issue 14: REST answered 500, gRPC UNKNOWN).
    x = placeholder("string", "scalar_string_output/default")
    sigs["scalar_string_output"] = signature(
        {"default": x},
        {"output": tf.strings.reduce_join(x, name="scalar_string_output/out")},
    )
    # Output dtypes json_tensor.cc's writer has no case for.
    x = placeholder("float32", "half_output/default")
    sigs["half_output"] = signature(
        {"default": x}, {"output": tf.cast(x, tf.float16, name="half_output/out")}
    )
    x = placeholder("int32", "uint16_output/default")
    sigs["uint16_output"] = signature(
        {"default": x}, {"output": tf.cast(x, tf.uint16, name="uint16_output/out")}
    )
    # FromJsonSingleZeroBatchTensor: int_tensor of shape [0, 2].
    x = placeholder("int32", "zero_batch/default")
    sigs["zero_batch"] = signature({"default": x}, {"int_tensor": x[:0]})
    # FromJsonMultipleZeroBatchTensors: str_tensor [0, 1, 2], float_tensor [0, 3, 4].
    x = placeholder("float32", "zero_batch_multiple/default")
    sigs["zero_batch_multiple"] = signature(
        {"default": x},
        {
            "str_tensor": tf.fill([0, 1, 2], "", name="zero_batch_multiple/str"),
            "float_tensor": tf.zeros([0, 3, 4], name="zero_batch_multiple/float"),
        },
    )
    # FromJsonMultipleZeroBatchTensorsErrors: int_tensor [0, 2], str_tensor [1, 2].
    x = placeholder("float32", "zero_batch_mismatch/default")
    sigs["zero_batch_mismatch"] = signature(
        {"default": x},
        {
            "int_tensor": tf.zeros([0, 2], tf.int32, name="zero_batch_mismatch/int"),
            "str_tensor": tf.constant([["foo", "bar"]], name="zero_batch_mismatch/str"),
        },
    )
    # FromJsonMultipleNamedTensorsErrors: int_tensor [2, 3], str_tensor [1, 3].
    x = placeholder("float32", "batch_mismatch/default")
    sigs["batch_mismatch"] = signature(
        {"default": x},
        {
            "int_tensor": tf.constant([[1, 2, 3], [4, 5, 6]], name="batch_mismatch/int"),
            "str_tensor": tf.constant([["foo", "bar", "baz"]], name="batch_mismatch/str"),
        },
    )

    # A SignatureDef.defaults entry: `b` may be omitted (gRPC Predict), `a` may not.
    a = placeholder("float32", "with_defaults/a")
    b = placeholder("float32", "with_defaults/b")
    sigs["with_defaults"] = signature({"a": a, "b": b}, {"sum": tf.add(a, b, name="sum")})
    sigs["with_defaults"].defaults["b"].CopyFrom(tf.make_tensor_proto([10.0], dtype=tf.float32))

    sigs.update(_classify_regress_signatures(tf, placeholder, signature))
    return sigs


def _classify_regress_signatures(tf, placeholder, signature):
    """What classifier_test.cc's and regressor_test.cc's FakeSessions compute, in a graph.

    Classify: classes are each Example's bytes feature "class", scores its float feature
    "score" (+1 for output_plus_one). Regress: the float feature "output" (+1 for
    output_plus_one). Both read serialized tf.Examples from the single input "inputs".
    """
    sigs = {}

    def examples(key: str):
        serialized = placeholder("string", f"{key}/inputs", shape=[None])
        return serialized

    def class_score(serialized):
        parsed = tf.io.parse_example(
            serialized,
            {"class": tf.io.VarLenFeature(tf.string), "score": tf.io.VarLenFeature(tf.float32)},
        )
        classes = tf.sparse.to_dense(parsed["class"], default_value="")
        scores = tf.sparse.to_dense(parsed["score"], default_value=0.0)
        return classes, scores

    def output_feature(serialized):
        parsed = tf.io.parse_example(serialized, {"output": tf.io.VarLenFeature(tf.float32)})
        return tf.sparse.to_dense(parsed["output"], default_value=0.0)

    key = "classify"
    s = examples(key)
    classes, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": classes, "scores": scores}, CLASSIFY)

    key = "classify_output_plus_one"
    s = examples(key)
    classes, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": classes, "scores": scores + 1}, CLASSIFY)

    key = "classify_classes_only"
    s = examples(key)
    classes, _ = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": classes}, CLASSIFY)

    key = "classify_scores_only"
    s = examples(key)
    _, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"scores": scores}, CLASSIFY)

    # MalformedScores: scores of rank 3, [batch, classes, 10].
    key = "ImproperlySizedScoresSignature"
    s = examples(key)
    classes, scores = class_score(s)
    sigs[key] = signature(
        {"inputs": s},
        {"classes": classes, "scores": tf.tile(scores[:, :, None], [1, 1, 10])},
        CLASSIFY,
    )

    # ClassesIncorrectTensorType: classes of DT_FLOAT.
    key = "classify_classes_float"
    s = examples(key)
    _, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": scores, "scores": scores}, CLASSIFY)

    # MismatchedNumberOfTensorClasses: classes [batch, 1], scores [batch, n].
    key = "classify_mismatched_classes"
    s = examples(key)
    classes, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": classes[:, :1], "scores": scores}, CLASSIFY)

    # InvalidNamedSignature (classifier): a regression signature used to classify.
    key = "invalid_regression_signature"
    s = examples(key)
    sigs[key] = signature({"inputs": s}, {"outputs": output_feature(s)[:, 0]}, REGRESS)

    key = "regress"
    s = examples(key)
    sigs[key] = signature({"inputs": s}, {"outputs": output_feature(s)[:, 0]}, REGRESS)

    key = "regress_output_plus_one"
    s = examples(key)
    sigs[key] = signature({"inputs": s}, {"outputs": output_feature(s)[:, :1] + 1}, REGRESS)

    # MalformedOutputs: [batch, 1, 10].
    key = "ImproperlySizedOutputSignature"
    s = examples(key)
    sigs[key] = signature(
        {"inputs": s}, {"outputs": tf.tile(output_feature(s)[:, :1, None], [1, 1, 10])}, REGRESS
    )

    # UnexpectedOutputTensorType: a DT_STRING output.
    key = "regress_string_output"
    s = examples(key)
    sigs[key] = signature(
        {"inputs": s}, {"outputs": tf.strings.as_string(output_feature(s)[:, 0])}, REGRESS
    )

    # UnexpectedOutputTensorSize: twice as many values as examples.
    key = "regress_double_batch"
    s = examples(key)
    out = output_feature(s)[:, 0]
    sigs[key] = signature({"inputs": s}, {"outputs": tf.concat([out, out], 0)}, REGRESS)

    # InvalidNamedSignature (regressor): a classification signature used to regress.
    key = "invalid_classification_signature"
    s = examples(key)
    classes, scores = class_score(s)
    sigs[key] = signature({"inputs": s}, {"classes": classes, "scores": scores}, CLASSIFY)
    return sigs


def build_corpus_model(export_dir: Path) -> Path:
    """Write the `tfs_corpus` SavedModel to `export_dir` (a version directory)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        signatures = _signatures(tf)
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()
    return export_dir

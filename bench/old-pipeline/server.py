"""The old Python server's ExtractNoseVector, as the benchmark's baseline.

usage: server.py DESCRIPTOR_SET
DESCRIPTOR_SET is proto/nose_embedder.proto compiled by `buf build -o`; the
message classes are built from it at start-up, so no generated Python is
kept anywhere. Prints "listening PORT" once serving on 127.0.0.1 and stops
when its standard input closes, so a harness that dies never leaves it behind.

Preprocessing is the reference's own function (test/pil/reference.py's
preprocess: exif_transpose, convert RGB, LANCZOS to 224, /255, CHW), then the
contiguous float32 copy ONNX Runtime would be fed. Inference is not here:
Debian has no python3-onnxruntime, so the harness times the same engine
(onnxruntime-node) on the same tensor and adds it. The answer carries a
512-float placeholder vector (the old answer's size) and, as trailing
metadata, x-preprocess-ms: perf_counter around decode..CHW copy. A request
with metadata x-return-tensor gets the whole (3, 224, 224) tensor in
`vector` instead, for checking against the reference.
"""
import ast
import os
import sys
import time
from concurrent import futures

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, message_factory

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIZE = 224


def reference_preprocess(size):
    """preprocess() as test/pil/reference.py defines it, without running that script."""
    path = os.path.join(ROOT, "test", "pil", "reference.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    keep += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "preprocess"]
    namespace = {"size": size}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), namespace)
    return namespace["preprocess"]


def main():
    with open(sys.argv[1], "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    classes = message_factory.GetMessages(files)
    request_class = classes["nose_embedder.NoseImageRequest"]
    response_class = classes["nose_embedder.NoseVectorResponse"]
    preprocess = reference_preprocess(SIZE)

    def extract(request, context):
        t = time.perf_counter()
        try:
            _, chw = preprocess(request.image_data)
            chw = np.ascontiguousarray(chw, dtype=np.float32)
        except Exception as e:  # the old server answered bad images in-band
            return response_class(success=False, error_message=f"ML_4001: {type(e).__name__}: {e}", error_code=0, retryable=False)
        ms = (time.perf_counter() - t) * 1000
        context.set_trailing_metadata((("x-preprocess-ms", f"{ms:.4f}"),))
        want_tensor = any(k == "x-return-tensor" for k, _ in context.invocation_metadata())
        vector = chw.ravel() if want_tensor else np.zeros(512, dtype=np.float32)
        return response_class(vector=vector.tolist(), vector_size=vector.size, success=True)

    limit = 64 * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    handler = grpc.method_handlers_generic_handler(
        "nose_embedder.NoseEmbedderService",
        {
            "ExtractNoseVector": grpc.unary_unary_rpc_method_handler(
                extract, request_deserializer=request_class.FromString, response_serializer=response_class.SerializeToString
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()

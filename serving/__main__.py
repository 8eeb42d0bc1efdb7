"""`python -m serving`: the embedded model server, with tensorflow_model_server's flags."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from serving.flags import FlagError, parse_flags, thread_counts

EMBEDDED_VERSION = "embedded (TF Serving protocol 2.21)"


def main(argv: list[str] | None = None) -> int:
    """Parse flags, configure TensorFlow's thread pools, run the server; return exit status."""
    logging.basicConfig(
        level=os.environ.get("SERVING_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("serving")
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv)
        if flags.version:
            import tensorflow as tf

            print(
                f"TensorFlow ModelServer: {EMBEDDED_VERSION}\nTensorFlow Library: {tf.__version__}"
            )
            return 0
        from serving.server_config import load_server_config

        # Config files are checked before TensorFlow's slow import: a typo fails at once.
        config = load_server_config(flags)
    except FlagError as error:
        log.error("Failed to start server. Error: INVALID_ARGUMENT: %s", error)
        return 1
    import tensorflow as tf

    # Must happen before TensorFlow creates its thread pools (the first op or load).
    intra, inter = thread_counts(flags)
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    from serving.server import run_server

    # TensorFlow calls run in worker threads and need the GIL for their Python part; the
    # default 5 ms switch interval lets the busy event loop hold them up for that long.
    sys.setswitchinterval(0.0005)
    log.info("starting (pid %d)", os.getpid())
    return asyncio.run(run_server(config))


if __name__ == "__main__":
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Requests are drained and ports closed by now; skip TensorFlow's slow interpreter
    # teardown (seconds on a busy machine) so a rolling restart is not held up by it.
    os._exit(status)

"""Serve model artifacts on SageMaker's hosting contract and TorchServe's inference API.

SageMaker starts the container with the argument ``serve``; this module accepts it::

    python -m serving serve                                   # the model in SM_MODEL_DIR or /opt/ml/model
    SM_MODEL_DIR=.deepcloud/local/jobs/<id>/model python -m serving --port 8081
    python -m serving --model-store models/ --models digits=digits,big=resnet --max-batch-size 16,digits=1
    python -m serving --model-store models/ --max-batch-delay-ms 5 --threads 2
    make deploy                                               # the latest trained artifact, in the background

Every setting is a flag, else an environment variable (SageMaker passes only environment), else a default:

=====================  =================================  ==========================================
flag                   environment                        default
=====================  =================================  ==========================================
--host                 DEEPCLOUD_BIND_HOST                127.0.0.1 (the image sets 0.0.0.0)
--port                 SAGEMAKER_BIND_TO_PORT             8080
--model-dir            SM_MODEL_DIR                       $SAGEMAKER_BASE_DIR/model (/opt/ml/model)
--model-store          DEEPCLOUD_MODEL_STORE              none: serve --model-dir as model "model"
--models               DEEPCLOUD_MODELS                   every artifact in the store
--max-batch-size       DEEPCLOUD_MAX_BATCH_SIZE           32
--max-batch-delay-ms   DEEPCLOUD_MAX_BATCH_DELAY_MS       0 (batch what queued up, wait for nothing)
--max-queue            DEEPCLOUD_MAX_QUEUE                1024 requests per model, then 503
--timeout-s            SAGEMAKER_MODEL_SERVER_TIMEOUT     60 (SageMaker's invocation timeout), then 504
--max-body-bytes       DEEPCLOUD_MAX_BODY_BYTES           6291456 (SageMaker's 6 MB cap), then 413
--threads              DEEPCLOUD_INFERENCE_THREADS        torch's default (one per core)
--device               DEEPCLOUD_DEVICE                   cuda when present, else cpu
--management-port      DEEPCLOUD_MANAGEMENT_PORT          off (serving/management.py)
--management-host      DEEPCLOUD_MANAGEMENT_HOST          127.0.0.1
--management-token-    DEEPCLOUD_MANAGEMENT_TOKEN_FILE    ~/.deepcloud/management-token (made, 0600,
  file                                                    when missing; the token is never logged)
--no-access-log        DEEPCLOUD_ACCESS_LOG=0             a JSON line per request on stderr
--trust-model-files    DEEPCLOUD_TRUST_MODEL_FILES=1      off: a .pt2 the strict reader refuses is not
                                                          served (on: torch.export.load, which may run
                                                          code from the file)
--max-connections      DEEPCLOUD_MAX_CONNECTIONS          512, then the oldest idle one is closed (503)
--max-header-bytes     DEEPCLOUD_MAX_HEADER_BYTES         32768 (request line and headers), then 431
--max-headers          DEEPCLOUD_MAX_HEADERS              100 header lines, then 431
--max-request-line-    DEEPCLOUD_MAX_REQUEST_LINE_BYTES   8192, then 414
  bytes
--header-timeout-s     DEEPCLOUD_HEADER_TIMEOUT_S         10 to send the request line and headers, then 408
--body-timeout-s       DEEPCLOUD_BODY_TIMEOUT_S           30 to send the body, then 408
--max-pending-body-    DEEPCLOUD_MAX_PENDING_BODY_BYTES   134217728: bodies held at once, then 503
  bytes
--max-image-pixels     DEEPCLOUD_MAX_IMAGE_PIXELS         16777216 (4096x4096) per decoded image, then 400
--multi-model          SAGEMAKER_MULTI_MODEL=true         off: SageMaker sets it on a multi-model
                                                          endpoint (serving/multimodel.py)
--multi-model-dir      DEEPCLOUD_MULTI_MODEL_DIR          /opt/ml/models: the only place it loads from
--multi-model-memory-  DEEPCLOUD_MULTI_MODEL_MEMORY_      70 % of the memory available at startup,
  bytes                  BYTES                            then least recently used models unload (507)
=====================  =================================  ==========================================

serving/limits.py says why each limit is there; docs/serving.md ("Threat model") what each one bounds.

``--max-batch-size`` and ``--max-batch-delay-ms`` take one value for every model, or a list that sets
some models apart: ``16,digits=1`` (see serving/store.py for the model store's layout).

The socket is bound first, before torch is imported, so ``/ping`` answers 503 while the models load and
200 once every one is loaded, verified and warmed up. SIGTERM/SIGINT drain in-flight requests (up to
25 s: SageMaker kills 30 s after SIGTERM), then the process ends by that signal (status 143/130 in a
shell; as a container's PID 1, whose own signals with the default action the kernel ignores, it exits 0).
Exit codes otherwise: 1 the port is taken, a setting is wrong or a model cannot be served (the last line
on stderr, ``error: ...``, says which, naming the flag or environment variable); 2 bad command line.

serving/config.py reads and checks the settings, serving/server.py starts the server, serving/app.py is
the ASGI app.
"""

from __future__ import annotations

import logging
import signal
import sys

from serving.config import StartupError, parse
from serving.server import serve


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return serve(parse(sys.argv[1:] if argv is None else argv))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # uvicorn re-raised the SIGINT that stopped it: end by it, without a traceback
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)
        return 130


if __name__ == "__main__":
    sys.exit(main())

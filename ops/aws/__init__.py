"""TARGET=aws: the Make targets against the Pulumi stack (infra/), driven through its outputs; cli.py dispatches.

    preflight  credentials, pulumi CLI and stack outputs, Docker engine, GPU quotas (preflight.py)
    data       the demo dataset, copied to the stack's data bucket (dataset.py)
    train      the trainer image as an ECS task (BACKEND=ecs) or a SageMaker job (BACKEND=sagemaker) (training/)
    deploy     a trained run behind the SageMaker endpoint via `pulumi up` (deploy.py); on a multi-model
               endpoint a copy under its S3 prefix instead, no `pulumi up` (multi_model.py)
    predict    the test images through the endpoint, in its mode (predict.py); MODEL= picks the run on a
               multi-model endpoint
    rollback   the previous deploy again (deploy.py)
    status     what runs and what it costs per hour (status.py)
    logs       a run's log, or the endpoint's (status.py)
    destroy    stop runs, `pulumi destroy`, audit what is left by the stack tag (destroy.py)

Settings come from flags or the environment (Make passes its command-line variables on): STACK (the Pulumi
stack; default the selected one), BACKEND, MAX_COST (dollars), MAX_HOURS, INSTANCE_TYPE and INSTANCE_COUNT
(SageMaker: the instance type, and how many instances the one job runs on; default 1), RESUME
(a run id whose checkpoints to start from), MODEL (the run to deploy; on a multi-model endpoint also the one
predict sends to), RUN (the run for logs), ENDPOINT=1 (logs of the endpoint).
"""

COMMANDS = ("preflight", "data", "train", "deploy", "rollback", "predict", "status", "logs", "destroy")

"""The training image: reads the SageMaker training layout, trains, writes a model artifact."""

"""Code the Pulumi program packages into AWS Lambda functions; each folder is one function's whole package."""

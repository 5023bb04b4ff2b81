"""TARGET=container and the image builds: the trainer and the server in their images under ops' own Docker engine.

cli.py      the target's commands (the local target's, in the images)
session.py  one command's engine and images; train, deploy and destroy as SageMaker runs the containers
engine.py   ops' own dockerd (or DOCKER_HOST's engine)
images.py   the two images built here (local base, CPU torch)
build.py    how both images are built, here and for AWS: one code path
base.py     the local Debian base image, made with mmdebstrap
"""

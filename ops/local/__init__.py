"""TARGET=local: the trainer and the server as processes on this machine (cli.py lists the commands)."""

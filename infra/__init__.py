"""The Pulumi program for deepcloud's AWS stack (`pulumi up` runs __main__.py, which calls program.main)."""

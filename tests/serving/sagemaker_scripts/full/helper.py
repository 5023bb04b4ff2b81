"""Imported by full/inference.py; transform/ has a helper.py of its own with another VALUE: they must not meet."""

VALUE = 2.0

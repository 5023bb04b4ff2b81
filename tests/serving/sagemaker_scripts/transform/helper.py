"""Imported by transform/inference.py; full/ has a helper.py of its own with another VALUE."""

VALUE = 100.0

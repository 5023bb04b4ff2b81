"""The commands behind the Make targets. Drives trainer and serving as processes, never by import."""

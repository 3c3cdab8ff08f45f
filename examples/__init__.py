"""Examples to copy: your own analyzers as a plugin (my_analyzers.py, docs/plugins.md)."""

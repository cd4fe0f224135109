"""Glue that spans the packages: the `pdistill` command, dataset inspection, the demo.

`pipelines` and `trainer` never import each other; code that needs both (the demo) lives here.
"""

__version__ = "0.1.0"

"""Data for silos: known datasets, pure partition functions, silo folders and their loaders.

Submodules are imported explicitly (``from fedsilo.data import partition``) so that importing
this package stays cheap; nothing heavy is re-exported here.
"""

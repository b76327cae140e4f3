"""The Ray backend: the coordinator (the one process that writes the store), the workers, Ray's settings.

local.py, beside this package, is the other backend; runs/tasks.py holds what both share."""

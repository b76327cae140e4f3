"""Backends that train an experiment's tasks elsewhere than this process (runner.py is the local one)."""

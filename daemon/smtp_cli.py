"""Commands registered on `buzon` (see daemon/cli.py)."""

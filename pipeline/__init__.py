"""The whole experiment as one pipeline of stages (``cli.py pipeline``)."""

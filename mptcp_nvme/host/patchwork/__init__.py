"""Patchwork for the CI bot: the REST client (client.py) the poll/serve/run commands use."""

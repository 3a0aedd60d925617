"""Fault injection under load: does a message with a ``sent`` receipt survive each fault?

``python -m tests.chaos`` runs every scenario with the full load and prints the table of the
README's "Reliability" section; ``test_chaos.py`` runs them with a short load.
"""

"""The ``switchboard`` command: runs a service, mints a development token, sends a backend
command (``kick``, ``presence``) or prints a namespace's RabbitMQ topology.

``cli.py`` parses the command line (no I/O); ``__main__.py`` carries the parsed command out;
``backend.py`` publishes a backend command and waits for its reply; ``dev_token.py`` signs a
development token. Installed as the console script ``switchboard`` (pyproject.toml), and runs as
``python -m switchboard`` too.
"""

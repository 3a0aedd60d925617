"""What every Switchboard service runs the same way, written once.

Starting (``main.py``: settings, logging, exit codes; ``settings.py``: the settings every service
reads alike), RabbitMQ (``bus.py``: connecting, declaring the topology, confirmed publishes,
consumers), health and metrics (``health.py``, ``metrics.py``), batches of consumed messages
(``batch_loop.py``) and stopping (``shutdown.py``).

This package imports ``proto`` and third-party libraries, never a service; the services import
it. It is not part of the contract: ``proto/`` is what other languages read.
"""

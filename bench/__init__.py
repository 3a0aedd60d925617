"""Benchmarks: Switchboard against python-socketio, a websockets relay and raw aio-pika.

``make bench`` (``python -m bench``) runs every scenario three times and writes
``bench/RESULTS.md``.
"""

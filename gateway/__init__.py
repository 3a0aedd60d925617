"""The WebSocket edge: clients in, AMQP out, deliveries pushed back to sockets.

A gateway talks to RabbitMQ only.
"""

"""The WebSocket edge: clients in, AMQP out, deliveries pushed back to sockets. Talks to RabbitMQ only."""

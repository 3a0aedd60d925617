"""The offline store: keeps what could not be delivered (PostgreSQL) and replays it on init."""

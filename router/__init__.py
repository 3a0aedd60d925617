"""The router: presence in Redis, and one delivery per gateway for each batch of frames."""

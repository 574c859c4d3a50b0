"""What the tests and the harness share to drive a real server: request bodies (payloads), server processes (server), a load driver (driver) and its records."""

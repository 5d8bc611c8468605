"""The clients (clients/): their one protocol core, checked against the server and each other,
and each client's reconnect rule against a server that closes with a chosen code."""

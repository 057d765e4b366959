"""The key hierarchy: envelope encryption, the key rings over the root keys, client credentials."""

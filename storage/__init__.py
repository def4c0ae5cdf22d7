"""Where the registry keeps things: blob bytes in a driver, relations in the metadata index."""

"""Built-in lance-bridge connectors, one module each."""

"""sam4dcap perception."""

"""Layer 8: tools built on the library: the command line and its demo."""

"""Model folders the project builds or converts (e.g. SmolLM2-135M-Instruct from PyPI)."""

"""Ollama image code: GGUF importer (Modelfile + /api/create), supervisor, authenticating proxy."""

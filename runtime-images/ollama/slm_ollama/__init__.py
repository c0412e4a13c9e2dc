"""Ollama image code: GGUF importer (Modelfile + /api/create) and supervisor (`slm_ollama serve`).

The key check in front of Ollama is the gateway (runtime-images/gateway).
"""

"""Runtime image code (see the folder README)."""

import sys

from slm_ollama.cli import main

sys.exit(main())

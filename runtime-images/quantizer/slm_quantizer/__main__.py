import sys

from slm_quantizer.cli import main

sys.exit(main())

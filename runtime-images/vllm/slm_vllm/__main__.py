import sys

from slm_vllm.launcher import main

sys.exit(main())

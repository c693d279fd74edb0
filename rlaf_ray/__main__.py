import sys

from rlaf_ray.cli import main

sys.exit(main())

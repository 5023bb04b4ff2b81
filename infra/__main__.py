"""The Pulumi program: it will compose components from infra/components/ with one typed config.

Not built yet (it is the infra issue's work). Until then `pulumi up` stops here, before creating
anything, instead of reporting an empty stack as a success.
"""

import sys

sys.exit("error: the deepcloud Pulumi program is not built yet; use the local target (make demo)")

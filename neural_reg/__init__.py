"""neural-reg: the orchestration of the pipeline (settings, database server, workflow, command line, demo, reports).

The computation lives in ``pipeline/`` (no database), the data model in ``schemas/``; this package joins them.
"""

import warnings

# The one place for DataJoint's warnings that say nothing to a neural-reg user (schemas/ imports this package
# first, through neural_reg.settings): its settings live in neural-reg.json, not datajoint.json.
warnings.filterwarnings("ignore", message=".*datajoint.json.*")
warnings.filterwarnings("ignore", message=".*MariaDB is not officially supported.*")

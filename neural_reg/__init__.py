"""neural-reg: the orchestration of the pipeline (settings, database server, workflow, command line, demo, reports).

The computation lives in ``pipeline/`` (no database), the data model in ``schemas/``; this package joins them.
"""

import warnings

# The one place for DataJoint's warnings that say nothing to a neural-reg user (schemas/ imports this package
# first, through neural_reg.settings): its settings may live in neural-reg.json rather than datajoint.json. DataJoint's
# "MariaDB is not officially supported" is not hidden: neural_reg.database.connect shows it once (README, "Database
# backends"); nor is a datajoint.json that fails to load (neural-reg honours it).
warnings.filterwarnings("ignore", message="No datajoint.json found")

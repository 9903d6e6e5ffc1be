import warnings

warnings.filterwarnings("ignore", message=".*datajoint.json.*")
warnings.filterwarnings("ignore", message=".*MariaDB is not officially supported.*")

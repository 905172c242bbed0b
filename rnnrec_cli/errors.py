"""Expected failures. The CLI turns each into one `Error: ...` line and exit code 1."""


class RnnrecError(Exception):
    """Base class: a failure caused by the user's data, options or run directory."""


class DataError(RnnrecError):
    """The input events or a prepared data directory cannot be used as they are."""


class ConfigError(RnnrecError):
    """An option or config value is invalid."""


class RunDirError(RnnrecError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingDiverged(RnnrecError):
    """The loss became NaN or infinite."""


class StorageError(RnnrecError):
    """A tuning study's database cannot be reached or used."""

"""The failures a user can fix. Each message is one sentence that names the file, key or flag at fault,
the cause and what to do; search.py and predict.py print it and exit with status 2, never a traceback.

One concern: these types. It imports nothing, so every module may raise them and the command lines can
catch them before Keras is loaded.
"""


class UserError(Exception):
    """A failure whose message tells the user what to change."""


class ConfigError(UserError, ValueError):
    """A config file or flag holds something this tool cannot use; the message says which."""


class DataError(UserError, ValueError):
    """The dataset folder or one of its images cannot be used; the message says which and what to do."""


class SearchError(UserError, RuntimeError):
    """The search could not produce a usable result; the message says why."""


class RunFilesError(UserError, RuntimeError):
    """A run's files could not be written; the message names the folder and what to do."""

"""How a command fails: a usage error (exit status 2: the command line, the parameters or a name in it is
wrong) or a failure (exit status 1: the data or the model could not be used). Both carry a message for
the user; neither leaves output behind."""

USAGE_ERROR_STATUS = 2
FAILURE_STATUS = 1


class UsageError(Exception):
    """The command cannot run as given: a missing topic, an output that exists, an invalid parameter."""


class Failure(Exception):
    """The command ran into data or a model it cannot use: a corrupt bag, no decodable frame, unreadable weights."""

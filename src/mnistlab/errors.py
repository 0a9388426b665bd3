"""The one exception type users see: a one-line message naming the thing and the fix."""


class MnistlabError(Exception):
    """A problem with the user's input or environment, reported as one line, exit status 1.

    The message names the file, key or value at fault and says what to do about it.
    Anything else that escapes is a bug and keeps its traceback.
    """

"""The one base class of the errors a user can cause or fix.

Every slapp command turns a :class:`SlappError` (and the input errors of the
libraries it uses: marshmallow validation, JSON syntax) into one line on stderr
and exit status 1. Any other exception is a bug in slapp and is reported as one.
"""


class SlappError(Exception):
    """An expected failure whose message tells the user what to change."""

"""The errors a user can fix, as one family: commands print them as one line (the file or option, and what to do),
while anything else keeps its traceback (a bug). Light: nothing is imported here.

- UserError: the base. InputError (also a ValueError): bad options, inputs or files. MissingInputError (also a
  FileNotFoundError): a file or folder that is not there.
- Subclasses elsewhere: io.OutputError (a full or read-only output), records.BusyError (another run writes there),
  weights.MissingModelError (weights that are not here), records.MetadataError, compose.pools.PoolError,
  importers.layout.LayoutError, hub.HubError, slices.SlicesError, cluster.RayUnavailable, ormbg.model.WeightsError.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message names the file or option and what to do."""


class InputError(UserError, ValueError):
    """Bad options or inputs (a ValueError too, for callers of the library)."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or folder that is not there (a FileNotFoundError too)."""

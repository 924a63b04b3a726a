"""The bundle reader, where the runtime has always imported it from.

The bundle format has one owner, `styleship.bundle` (docs/bundle.md); this
module re-exports its reader and types so existing imports keep working.
"""

from styleship.bundle import *  # noqa: F403  (the re-export is this module's purpose)
from styleship.bundle import __all__  # noqa: F401

"""styleship: ship feed-forward style-transfer models to production.

The top level stays import-light: `from styleship import Stylizer` pulls only
numpy and OpenCV; torch is imported by the stages that train and export.
"""

from styleship.errors import (
    BackendUnavailable,
    ExportError,
    InputError,
    ModelError,
    StyleshipError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ExportError",
    "InputError",
    "ModelError",
    "StyleshipError",
    "Stylizer",
    "__version__",
]


def __getattr__(name: str):
    # Lazy so that `import styleship` does not load the runtime (and OpenCV) eagerly.
    if name == "Stylizer":
        from styleship.runtime.stylizer import Stylizer

        return Stylizer
    raise AttributeError(name)

